"""`score-fusion`: title + description scores against the full-path and the leaf documents, standardised
per product and averaged; an image model adds its image-to-category scores (the same total weight as
the text) for the products whose image decodes. `fused_scores` fuses any documents the same way: the
cascade reads it on full-depth alone."""

from __future__ import annotations

import numpy as np

from taxo_pipeline.approaches.image_retrieval import product_images
from taxo_pipeline.approaches.spec import MODEL, Approach, Classified, ClassifyRequest
from taxo_pipeline.approaches.title_description import query_vectors, text_scores
from taxo_pipeline.retrieval.exact_search import top_k
from taxo_pipeline.retrieval.fusion import ScoreSource, fuse
from taxo_pipeline.retrieval.images import image_queries
from taxo_pipeline.retrieval.variants import BOTH, variants_read


def image_sources(request: ClassifyRequest, variants: tuple[str, ...]) -> list[ScoreSource]:
    """Image-to-category scores per variant for the products whose image decodes; none for text models."""
    if request.model_family != "image":
        return []
    queries = image_queries(request.products["product_id"].to_list(), product_images(request.products))
    if not queries.images:
        return []
    vectors = request.evidence.encode(request.model, queries.images, is_query=True, batch_size=request.batch_size)
    present = np.isin(request.products["product_id"].to_numpy(), queries.product_ids)
    sources = []
    for variant in variants:
        scores = np.zeros((request.products.height, len(request.taxonomy.paths)))
        scores[present] = request.evidence.category_scores(request.model, variant, vectors)
        sources.append(ScoreSource(f"image {variant}", scores, weight=1 / len(variants), present=present))
    return sources


def fused_scores(request: ClassifyRequest, queries: np.ndarray) -> tuple[np.ndarray, dict]:
    """The fused scores of the documents the request's variant names (`both`: full-path and leaf)."""
    variants = variants_read(request.variant)
    sources = [ScoreSource(f"text {v}", text_scores(request, v, queries), weight=1 / len(variants)) for v in variants]
    images = image_sources(request, variants)
    notes = {
        "fused_sources": ", ".join(s.name for s in sources + images),
        "image_products_fused": int(images[0].mask().sum()) if images else 0,
    }
    return fuse(sources + images), notes


def classify(request: ClassifyRequest) -> Classified:
    scores, notes = fused_scores(request, query_vectors(request))
    return Classified(request.products["product_id"].to_list(), top_k(scores, request.taxonomy.paths, request.top_k), notes)


APPROACH = Approach(
    name="score-fusion",
    score='full-path and leaf similarities standardised per product and averaged: higher is closer',
    description="Title + description scores against full-path and leaf documents (and images), standardised and averaged.",
    classify=classify,
    partitioning=MODEL,
    families=("text", "image"),
    stage="query_encode",
    batch_size=64,
    documents=BOTH,
)
