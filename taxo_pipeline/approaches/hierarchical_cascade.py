"""`hierarchical-cascade`: title + description scores against the full-depth documents (each node of the
taxonomy at TAXO_DEPTH, L1-L3 by default, scored by the best document of its full-taxonomy subtree; an
image model adds its image scores as score fusion does), decoded through the taxonomy level by level. A node's score is half its own, half its subtree's best; a
path's score is the mean over its levels, and the best path wins (taxo_pipeline/retrieval/cascade.py).
The hard greedy cascade is reported beside it.

Full-depth alone: fusing it with the full-path and leaf documents was worse on the protocol's development
part (bench/quality.py)."""

from __future__ import annotations

import numpy as np

from taxo_pipeline.approaches.score_fusion import fused_scores
from taxo_pipeline.approaches.spec import MODEL, Approach, Classified, ClassifyRequest
from taxo_pipeline.approaches.title_description import query_vectors
from taxo_pipeline.evaluation.metrics import at_level
from taxo_pipeline.retrieval.cascade import Hierarchy, hard_cascade, node_scores, path_scores
from taxo_pipeline.retrieval.exact_search import top_k
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH


def cascade_scores(request: ClassifyRequest, queries: np.ndarray) -> tuple[np.ndarray, dict]:
    fused, notes = fused_scores(request, queries)
    hierarchy = Hierarchy.from_paths(request.taxonomy.paths)
    aggregated = node_scores(fused, hierarchy)
    soft = path_scores(aggregated, hierarchy)
    hard = [hierarchy.paths[i] for i in hard_cascade(aggregated, hierarchy)]
    soft_top = [hierarchy.paths[i] for i in np.argmax(soft, axis=1)]
    # products where keeping every branch open changed the L1 the hard cascade committed to
    notes["l1_differs_from_hard_cascade"] = sum(at_level(s, 1) != at_level(h, 1) for s, h in zip(soft_top, hard))
    return soft, notes


def classify(request: ClassifyRequest) -> Classified:
    scores, notes = cascade_scores(request, query_vectors(request))
    return Classified(request.products["product_id"].to_list(), top_k(scores, request.taxonomy.paths, request.top_k), notes)


APPROACH = Approach(
    name="hierarchical-cascade",
    score="the category's best similarity among itself and its descendants, decoded level by level: higher is better",
    description="Full-depth scores decoded L1 -> L2 -> ... to the taxonomy's depth with aggregated node scores and "
    "the soft path rule.",
    classify=classify,
    partitioning=MODEL,
    families=("text", "image"),
    stage="query_encode",
    batch_size=64,
    documents=FULL_DEPTH,
)
