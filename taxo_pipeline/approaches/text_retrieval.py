"""`text-retrieval`, the reference's method: each description encoded as a query, the nearest category
documents of the partition's variant in the model's Chroma index (full-depth: the L1-L3 nodes whose
subtree holds the nearest documents)."""

from taxo_pipeline.approaches.evidence import QUERY_STAGE
from taxo_pipeline.approaches.spec import MODEL_VARIANT, Approach, Classified, ClassifyRequest


def classify(request: ClassifyRequest) -> Classified:
    vectors = request.evidence.encode(
        request.model, request.products["product_description"].to_list(), is_query=True, batch_size=request.batch_size
    )
    ranked = request.evidence.nearest_categories(request.model, request.variant, vectors, request.top_k)
    return Classified(request.products["product_id"].to_list(), ranked)


APPROACH = Approach(
    name="text-retrieval",
    score='cosine distance between the description and the category document (1 - similarity): lower is closer',
    description="The reference: the description as a query, nearest category documents (Chroma, cosine).",
    classify=classify,
    partitioning=MODEL_VARIANT,
    families=("text", "image"),
    stage=QUERY_STAGE,
    prints_distance=True,
    batch_size=8,  # the reference's, so its latencies compare
)
