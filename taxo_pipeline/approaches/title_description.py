"""`title-description`: the reference's nearest-category retrieval queried with the title and the
description instead of the description alone (exact cosine over the variant's documents)."""

import numpy as np

from taxo_pipeline.approaches.spec import MODEL_VARIANT, Approach, Classified, ClassifyRequest
from taxo_pipeline.retrieval.exact_search import normalise, top_k
from taxo_pipeline.retrieval.queries import title_and_description_queries


def query_vectors(request: ClassifyRequest, products=None) -> np.ndarray:
    """Unit-length `Title. Description` vectors of `products` (default: the request's)."""
    products = request.products if products is None else products
    texts = title_and_description_queries(products["product_title"].to_list(), products["product_description"].to_list())
    return normalise(request.evidence.encode(request.model, texts, is_query=True, batch_size=request.batch_size))


def text_scores(request: ClassifyRequest, variant: str, queries: np.ndarray) -> np.ndarray:
    """Products x L1-L3 nodes cosine similarities against the variant's documents."""
    return request.evidence.category_scores(request.model, variant, queries)


def classify(request: ClassifyRequest) -> Classified:
    scores = text_scores(request, request.variant, query_vectors(request))
    ranked = top_k(scores, request.taxonomy.paths, request.top_k)
    return Classified(request.products["product_id"].to_list(), ranked)


APPROACH = Approach(
    name="title-description",
    score='cosine similarity of `Title. Description` to the category document: higher is closer',
    description="Nearest category to the `Title. Description` query (exact cosine, the partition's variant).",
    classify=classify,
    partitioning=MODEL_VARIANT,
    families=("text", "image"),
    stage="query_encode",
    batch_size=64,
)
