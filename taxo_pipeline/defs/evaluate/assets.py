"""The evaluation assets, generated from the approach registry: for each approach,
`<approach>_predictions` classifies the evaluation table and stores the top-k, and `<approach>_metrics`
scores the top-1 against the ground truth. The approach itself is a plain function
(taxo_pipeline/approaches/); these assets only wire it to the data, the models and the warehouse."""

import dagster as dg
import polars as pl
from pydantic import Field

from taxo_pipeline.approaches.evidence import workspace_evidence
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import (
    L1,
    MODEL,
    MODEL_VARIANT,
    NLI_MODEL,
    RERANKER_RETRIEVER,
    Approach,
    ClassifyRequest,
)
from taxo_pipeline.classification.coverage import coverage_table, held_out
from taxo_pipeline.classification.evaluated import save_calibration
from taxo_pipeline.dataset.tables import load_corrections, load_experiment, load_trimmed_taxonomy
from taxo_pipeline.defs.automation import AUTOMATION
from taxo_pipeline.defs.feedback.corrections import corrections_file
from taxo_pipeline.defs.index.category_embeddings import category_embeddings
from taxo_pipeline.defs.ingest.assets import (
    products_experiment,
    taxonomy_full_depth,
    taxonomy_trimmed,
)
from taxo_pipeline.defs.metadata import calibration_metadata, hf1_chart_metadata, markdown_table, metrics_metadata
from taxo_pipeline.defs.models.fingerprints import FINGERPRINT_SOURCES
from taxo_pipeline.defs.models.partitions import (
    PARTITIONS,
    RERANKER_DIMENSION,
    encoder_models,
    nli_models,
    partition_mapping,
    partition_models,
    rerank_models,
)
from taxo_pipeline.defs.resources import SIEResource, WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.evaluate import classify_and_store, score_and_store
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.publication import refresh_views, settings_fingerprint
from taxo_pipeline.retrieval.variants import VARIANTS
from taxo_pipeline.sie.model_catalogue import Catalogue, load_catalogue
from taxo_pipeline.warehouse.results import clear_results
from taxo_pipeline.workspace import Workspace

CODE_VERSION = "3"
METRICS_CODE_VERSION = "5"  # 4: also stores the confidence calibration of path approaches; 5: chosen on dev, held out


class PredictionsConfig(dg.Config):
    top_k: int = Field(default=5, gt=0, description="Candidates stored per product.")
    limit: int | None = Field(
        default=None, gt=0,
        description="Evaluate only the first N products; their results are kept apart from the full evaluation's.",
    )  # fmt: skip
    batch_size: int | None = Field(default=None, gt=0, description="Inputs per SIE request (unset: the approach's).")


class RerankingConfig(PredictionsConfig):
    variant: str = Field(default="full-path", description=f"Which retrieval variant's candidates: {', '.join(VARIANTS)}.")


def predictions_key(approach: Approach) -> dg.AssetKey:
    return dg.AssetKey(f"{approach.slug}_predictions")


def _model_deps(partitioning: str) -> list[dg.AssetDep]:
    """The fingerprints of the models a partition calls, and the category index encoders read. A model
    partition reads every variant's index of its model, full-depth's included (Dagster maps a partition
    onto every key of the other dimension, not onto some)."""
    if partitioning == NLI_MODEL:
        return [dg.AssetDep(FINGERPRINT_SOURCES[nli_models.name])]
    if partitioning == RERANKER_RETRIEVER:  # the retriever comes through the approach it reads
        return [dg.AssetDep(FINGERPRINT_SOURCES[rerank_models.name], partition_mapping=RERANKER_DIMENSION)]
    return [
        dg.AssetDep(FINGERPRINT_SOURCES[encoder_models.name], partition_mapping=partition_mapping(partitioning, MODEL)),
        dg.AssetDep(category_embeddings, partition_mapping=partition_mapping(partitioning, MODEL_VARIANT)),
    ]


def _deps(approach: Approach, registered: dict[str, Approach]) -> list:
    reads = [
        dg.AssetDep(predictions_key(registered[name]), partition_mapping=partition_mapping(
            approach.partitioning, registered[name].partitioning))
        for name in approach.reads
    ]  # fmt: skip
    corrections = [corrections_file] if approach.needs_labels else []  # the reviewed labels it learns from too
    return [products_experiment, taxonomy_trimmed, taxonomy_full_depth, *corrections, *_model_deps(approach.partitioning), *reads]


def _notes_metadata(notes) -> dict[str, dg.MetadataValue]:
    return {
        name: dg.MetadataValue.md(markdown_table(value) if value.height else "none")
        if isinstance(value, pl.DataFrame) else value
        for name, value in notes.items()
    }  # fmt: skip


def _family(catalogue: Catalogue, model: str) -> str:
    known = {spec.id: spec for spec in catalogue}
    return known[model].family if model in known else "text"  # a remote server's model: assume a text encoder


def classify_partition(
    context: dg.AssetExecutionContext, approach: Approach, config: PredictionsConfig, storage: WorkspaceResource,
    sie: SIEResource,
) -> dg.Output:
    """Classify the evaluation table with the partition's models and store the top-k."""
    models, workspace = partition_models(approach.partitioning, context.partition_key), storage.workspace()
    variant = models.variant or approach.documents or config.variant
    if variant not in (*VARIANTS, approach.documents):
        raise InputError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    catalogue = load_catalogue(workspace.settings.models)
    key, family = ResultKey(approach.name, models.model, variant, models.reranker), _family(catalogue, models.model)
    if family not in approach.families:
        reason = f"{approach.name} needs a {' or '.join(approach.families)} model; {models.model} is a {family} model"
        clear_results(workspace.warehouse, key)
        context.log.info(f"skipped: {reason}")
        return dg.Output({"skipped": reason}, metadata={"skipped": reason, "products": 0})
    products = load_experiment(workspace, with_images=family == "image")
    full = config.limit is None
    products = products if full else products.head(config.limit)
    if products.height == 0:
        raise InputError(f"{key}: no products to evaluate in products_experiment: nothing was written")
    taxonomy = load_trimmed_taxonomy(workspace)
    # the settings the models have as the partition starts: what its predictions are recorded as computed with
    model_settings = settings_fingerprint(catalogue, models.model, models.reranker)
    with sie.client(logger=context.log) as client:
        evidence = workspace_evidence(workspace, client, taxonomy, variant)
        request = ClassifyRequest(
            products, taxonomy, evidence, models.model, variant, family, models.reranker, config.top_k,
            config.batch_size or approach.batch_size, labelled=products if approach.needs_labels else None,
            cross_validate=approach.needs_labels,
            corrections=load_corrections(workspace) if approach.needs_labels else None,
        )  # fmt: skip
        stored = classify_and_store(workspace.warehouse, approach, key, request, full, model_settings)
    context.log.info(f"{stored.key}: {len(stored.classified.product_ids)} of {products.height} products classified")
    if evidence.truncated:
        context.log.warning(f"{evidence.truncated} texts were cut to {workspace.settings.max_text_chars} characters (TAXO_MAX_TEXT_CHARS)")
    return dg.Output(
        stored.key.columns,
        metadata={
            "dagster/row_count": stored.rows,
            "products": products.height,
            "classified": len(stored.classified.product_ids),
            "dataset": stored.key.dataset,
            "sie_requests": evidence.sie_requests,
            "from_embedding_cache": evidence.from_cache,
            "texts_truncated": evidence.truncated,
            **_notes_metadata(stored.classified.notes),
        },
    )


def score_partition(approach: Approach, storage: WorkspaceResource, result: dict) -> dg.MaterializeResult:
    """Metrics of the stored top-1 for the product set the predictions covered, and (path approaches) the
    calibration fitted on them; then the views are refreshed and, when every result is whole, published
    (after a skipped or empty partition too: it may be the last one a rerun was waiting for)."""
    metadata, workspace = _score(approach, storage, result), storage.workspace()
    refresh_views(workspace.warehouse, load_catalogue(workspace.settings.models),
                  [a.name for a in approaches(workspace.settings.approaches)])  # fmt: skip
    return dg.MaterializeResult(metadata=metadata)


def _score(approach: Approach, storage: WorkspaceResource, result: dict) -> dict:
    """Score and calibrate; the metadata, read from the working tables (this partition's figures, whether
    published yet or not)."""
    if "skipped" in result:
        return {"skipped": result["skipped"], "count": 0}
    workspace = storage.workspace()
    key, warehouse = ResultKey(**result), workspace.warehouse
    catalogue = load_catalogue(workspace.settings.models)
    tuned = any(spec.train is not None for spec in catalogue if spec.id in (key.model, key.reranker))
    scored = score_and_store(warehouse, approach, key, load_trimmed_taxonomy(workspace).l1_labels(), test_part_only=tuned)
    if scored is None:
        return {"count": 0, "skipped": "no predictions to score"}
    # Path approaches are what classify-products runs: their confidence is calibrated on these rows.
    calibration = save_calibration(warehouse, key) if approach.headline != L1 else None
    coverage = coverage_table(*held_out(warehouse, key, published=False)) if calibration else []
    return {
        **metrics_metadata(scored.result, scored.count, scored.latency),
        **(calibration_metadata(calibration, coverage) if calibration else {}),
        "evaluation": scored.evaluation,
        **hf1_chart_metadata(warehouse, key.model, key.dataset),
    }


def evaluation_assets(approach: Approach, registered: dict[str, Approach]) -> list[dg.AssetsDefinition]:
    partitions_def, group = PARTITIONS[approach.partitioning], approach.slug
    config_type = RerankingConfig if approach.partitioning == RERANKER_RETRIEVER else PredictionsConfig

    @dg.asset(
        name=predictions_key(approach).path[-1], partitions_def=partitions_def, group_name=group,
        deps=_deps(approach, registered), code_version=CODE_VERSION, kinds={"sie", "duckdb"},
        automation_condition=AUTOMATION, description=f"`{approach.name}`: {approach.description}",
    )  # fmt: skip
    def predictions(
        context: dg.AssetExecutionContext, config: config_type, storage: WorkspaceResource, sie: SIEResource
    ) -> dg.Output:
        return classify_partition(context, approach, config, storage, sie)

    @dg.asset(
        name=f"{approach.slug}_metrics", partitions_def=partitions_def, group_name=group,
        ins={"result": dg.AssetIn(predictions_key(approach))}, code_version=METRICS_CODE_VERSION, kinds={"duckdb"},
        automation_condition=AUTOMATION,
        description=f"`{approach.name}` scored: strict and lenient {approach.headline} metrics, latency, into `metrics`.",
    )  # fmt: skip
    def metrics(storage: WorkspaceResource, result: dict) -> dg.MaterializeResult:
        return score_partition(approach, storage, result)

    return [predictions, metrics]


def registered_evaluation_assets(workspace: Workspace) -> list[dg.AssetsDefinition]:
    """Every registered approach's assets: the built-in ones and the workspace's TAXO_APPROACHES
    (taxo_pipeline/definitions.py adds them to the code location)."""
    registered = {approach.name: approach for approach in approaches(workspace.settings.approaches)}
    return [asset for approach in registered.values() for asset in evaluation_assets(approach, registered)]
