"""`reranking`: the retriever's top-k categories (the reference's text retrieval) rescored with a
cross-encoder's `score`, one request per product; the prediction is the best score."""

from taxo_pipeline.approaches import text_retrieval
from taxo_pipeline.approaches.evidence import RERANK_STAGE
from taxo_pipeline.approaches.spec import RERANKER_RETRIEVER, Approach, Classified, ClassifyRequest


def classify(request: ClassifyRequest) -> Classified:
    if not request.reranker:
        raise ValueError("reranking needs a reranker model")
    # The retriever's candidates, as text-retrieval computes them (its query vectors come from the cache).
    retrieved = text_retrieval.classify(request)
    candidates = [[path for path, _ in ranked] for ranked in retrieved.ranked]
    descriptions = dict(zip(request.products["product_id"].to_list(), request.products["product_description"].to_list()))
    scores = request.evidence.score(
        request.reranker, [descriptions[p] for p in retrieved.product_ids], candidates, batch_size=request.top_k
    )
    ranked = [
        sorted(zip(paths, map(float, values)), key=lambda pair: pair[1], reverse=True)
        for paths, values in zip(candidates, scores, strict=True)
    ]
    changed = sum(1 for paths, order in zip(candidates, ranked) if order and order[0][0] != paths[0])
    return Classified(retrieved.product_ids, ranked, notes={"top1_changed_by_reranker": changed})


APPROACH = Approach(
    name="reranking",
    score="the cross-encoder's relevance score of the retrieved category: higher is more relevant",
    description="Text retrieval's top-k candidates rescored by a cross-encoder.",
    classify=classify,
    partitioning=RERANKER_RETRIEVER,
    families=("text", "image"),  # the retriever's
    stage=RERANK_STAGE,
    batch_size=8,  # retrieval queries, as text-retrieval's; each product's candidates go in one score request
    report="reranking",
    reads=("text-retrieval",),
)
