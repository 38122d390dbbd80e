"""`nli`: zero-shot NLI; `extract` scores each description against the L1 labels and the top label is
the prediction (L1 macro F1, as the reference evaluates it)."""

from taxo_pipeline.approaches.evidence import EXTRACT_STAGE
from taxo_pipeline.approaches.spec import L1, NLI_MODEL, Approach, Classified, ClassifyRequest


def classify(request: ClassifyRequest) -> Classified:
    labels = request.taxonomy.l1_labels()
    classified = request.evidence.extract(
        request.model, request.products["product_description"].to_list(), labels, batch_size=request.batch_size
    )
    ranked = [[(c["label"], c["score"]) for c in labels_[: request.top_k]] for labels_ in classified]
    return Classified(request.products["product_id"].to_list(), ranked, notes={"labels": len(labels)})


APPROACH = Approach(
    name="nli",
    score="the NLI model's entailment probability for the top-level label: higher is more likely",
    description="Zero-shot NLI over the L1 labels: entailment of 'This product is about {label}'.",
    classify=classify,
    partitioning=NLI_MODEL,
    families=("nli",),
    stage=EXTRACT_STAGE,
    batch_size=16,  # the reference's
    headline=L1,
    report="nli",
    documents="l1",
)
