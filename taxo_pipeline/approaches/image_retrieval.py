"""`image-retrieval`: each product image encoded by an image model and queried against the same model's
category index. Products without an image, or whose bytes do not decode, are skipped and listed."""

import polars as pl

from taxo_pipeline.approaches.evidence import QUERY_STAGE
from taxo_pipeline.approaches.spec import MODEL_VARIANT, Approach, Classified, ClassifyRequest
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.retrieval.images import image_queries


def product_images(products: pl.DataFrame) -> list[bytes | None]:
    if IMAGE not in products.columns:
        return [None] * products.height
    return products[IMAGE].struct.field("bytes").to_list()


def classify(request: ClassifyRequest) -> Classified:
    queries = image_queries(request.products["product_id"].to_list(), product_images(request.products))
    ranked = []
    if queries.images:
        vectors = request.evidence.encode(request.model, queries.images, is_query=True, batch_size=request.batch_size)
        ranked = request.evidence.nearest_categories(request.model, request.variant, vectors, request.top_k)
    broken = pl.DataFrame({"product_id": list(queries.broken), "problem": list(queries.broken.values())},
                          schema={"product_id": pl.String, "problem": pl.String})  # fmt: skip
    return Classified(
        queries.product_ids,
        ranked,
        notes={
            "skipped_without_image": len(queries.without_image),
            "skipped_broken_image": len(queries.broken),
            "broken_images": broken,
        },
        skipped={**{p: "no image" for p in queries.without_image}, **queries.broken},
    )


APPROACH = Approach(
    name="image-retrieval",
    score='cosine distance between the image and the category document (1 - similarity): lower is closer',
    description="Each product image as a query against the same image model's category documents.",
    classify=classify,
    partitioning=MODEL_VARIANT,
    families=("image",),
    stage=QUERY_STAGE,
    prints_distance=True,
    query="image",
    batch_size=16,  # the reference's
)
