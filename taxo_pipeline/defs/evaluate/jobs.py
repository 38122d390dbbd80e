"""One evaluation job per partitioning, selected from the registry, so a run targets one partition of one kind."""

from collections.abc import Sequence

import dagster as dg

from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import MODEL, MODEL_VARIANT, NLI_MODEL, RERANKER_RETRIEVER, Approach
from taxo_pipeline.defs.evaluate.assets import predictions_key
from taxo_pipeline.defs.index.category_embeddings import category_embeddings
from taxo_pipeline.workspace import Workspace

JOB_NAMES = {
    MODEL_VARIANT: "encoder_evaluation",
    MODEL: "encoder_fusion_evaluation",
    NLI_MODEL: "nli_evaluation",
    RERANKER_RETRIEVER: "reranking_evaluation",
}
_DESCRIPTIONS = {
    MODEL_VARIANT: "The category index and every approach for one encoder x category-document variant.",
    MODEL: "Every approach that names the category documents it reads (fusion, cascade, label transfer), for one encoder.",
    NLI_MODEL: "Zero-shot NLI for one model.",
    RERANKER_RETRIEVER: "Rerank one retriever's candidates with one reranker.",
}


def evaluation_selection(registered: Sequence[Approach], partitioning: str) -> dg.AssetSelection:
    keys = [key for a in registered if a.partitioning == partitioning
            for key in (predictions_key(a), dg.AssetKey(f"{a.slug}_metrics"))]  # fmt: skip
    selection = dg.AssetSelection.assets(*keys)
    return selection | dg.AssetSelection.assets(category_embeddings) if partitioning == MODEL_VARIANT else selection


def evaluation_jobs(workspace: Workspace) -> list:
    """A job for each partitioning some registered approach (the workspace's TAXO_APPROACHES too) has."""
    registered = approaches(workspace.settings.approaches)
    return [
        dg.define_asset_job(name, selection=evaluation_selection(registered, partitioning),
                            description=_DESCRIPTIONS[partitioning])  # fmt: skip
        for partitioning, name in JOB_NAMES.items()
        if any(a.partitioning == partitioning for a in registered)
    ]
