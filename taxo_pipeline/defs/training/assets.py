"""Fine-tuned encoders: a models.yaml entry with a `train:` block, once enabled, is trained from its base here,
then served and evaluated like any encoder. Its weights' fingerprint changes, so the model sync adds it to the
encoder partitions (or records its new fingerprint) and the automation evaluates it, and only it, the base's
partitions untouched. A change to what it trains on (training_inputs, or the evaluation table's dev part)
trains it again."""

import dagster as dg
import polars as pl

from taxo_pipeline.dataset.tables import load_corrections, load_experiment, load_trimmed_taxonomy
from taxo_pipeline.defs.automation import AUTOMATION
from taxo_pipeline.defs.ingest.assets import products_experiment, taxonomy_full_depth
from taxo_pipeline.defs.metadata import markdown_table
from taxo_pipeline.defs.models.fingerprints import training_inputs
from taxo_pipeline.defs.models.partitions import trained_encoders
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.sie.model_catalogue import fingerprint, load_catalogue
from taxo_pipeline.training.pairs import evaluation_rows, training_rows, training_set, without_tested
from taxo_pipeline.training.weights import fine_tune

GROUP = "training"


@dg.asset(
    partitions_def=trained_encoders,
    group_name=GROUP,
    deps=[products_experiment, taxonomy_full_depth, training_inputs],
    code_version="1",
    kinds={"sentence-transformers"},
    automation_condition=AUTOMATION,
)
def fine_tuned_encoder(context: dg.AssetExecutionContext, storage: WorkspaceResource) -> dg.MaterializeResult:
    """The entry's base fine-tuned with in-batch negatives on (product text, category path) pairs: the evaluation
    table's dev part (never its test part), the files in TAXO_TRAINING_PRODUCTS and the reviewers' corrections,
    each shop or file capped; the weights under the entry's `weights: path`."""
    workspace = storage.workspace()
    catalogue = load_catalogue(workspace.settings.models)
    spec = catalogue[context.partition_key]
    base, taxonomy = catalogue[spec.train.base], load_trimmed_taxonomy(workspace)
    experiment = load_experiment(workspace)
    files, tested = without_tested(training_rows(workspace.settings.training_products, taxonomy), experiment)
    rows = pl.concat([evaluation_rows(experiment, load_corrections(workspace)), files])
    training = training_set(rows, taxonomy, spec.train.settings, workspace.settings.max_text_chars)
    context.log.info(f"{spec.id}: {training.height} pairs from {training['source'].n_unique()} sources, base {base.id}; "
                     f"{tested} rows of the training files left out: products of the evaluation's test part")  # fmt: skip
    tuned = fine_tune(base.resolve_weights(), fingerprint(base), spec.weights_dir, training, spec.train.settings, context.log)
    sources = training.group_by("source", maintain_order=True).len("pairs").sort("pairs", descending=True)
    report = tuned.report
    return dg.MaterializeResult(
        metadata={
            "pairs": training.height,
            "test_products_left_out": tested,  # rows of TAXO_TRAINING_PRODUCTS that are evaluation test products
            "sources": dg.MetadataValue.md(markdown_table(sources.head(30))),
            "base": base.id,
            "weights": dg.MetadataValue.path(str(tuned.folder)),
            "trained": report is not None,  # False: these pairs, base and settings were trained before
            "steps": report.steps if report else 0,
            "training_seconds": round(report.seconds, 1) if report else 0.0,
            "mean_loss": round(report.loss, 4) if report and report.loss is not None else None,
        },
        data_version=dg.DataVersion(tuned.fingerprint),
    )
