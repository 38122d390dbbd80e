"""`text-retrieval`, the reference's method: each description encoded as a query, the nearest category
documents of the partition's variant in the model's Chroma index."""

from taxo_pipeline.approaches.evidence import QUERY_STAGE
from taxo_pipeline.approaches.spec import MODEL_VARIANT, Approach, Classified, ClassifyRequest


def classify(request: ClassifyRequest) -> Classified:
    vectors = request.evidence.encode(
        request.model, request.products["product_description"].to_list(), is_query=True, batch_size=request.batch_size
    )
    matches = request.evidence.category_index(request.model, request.variant).query(vectors, request.top_k)
    ranked = [[(m.path, 1.0 - m.distance) for m in ms] for ms in matches]  # cosine similarity, higher is better
    return Classified(request.products["product_id"].to_list(), ranked)


APPROACH = Approach(
    name="text-retrieval",
    description="The reference: the description as a query, nearest category documents (Chroma, cosine).",
    classify=classify,
    partitioning=MODEL_VARIANT,
    families=("text", "image"),
    stage=QUERY_STAGE,
    prints_distance=True,
    batch_size=8,  # the reference's, so its latencies compare
)
