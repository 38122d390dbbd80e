"""`taxo-pipeline eval APPROACH` (and the reference's `eval-*` commands): materialize the approach's
partition through Dagster, so the run shows in the UI and its rows land in the warehouse, then write
the reference's JSON. Built from the approach registry: every registered approach has the command."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from taxo_pipeline import settings
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import MODEL, MODEL_VARIANT, RERANKER_RETRIEVER, Approach
from taxo_pipeline.cli.arguments import (
    add_approach_subcommands,
    add_model_arguments,
    add_source_arguments,
    approach_entry,
    partition_models,
    positive_int,
    storage,
)
from taxo_pipeline.cli.common import materialize
from taxo_pipeline.defs.evaluate.assets import predictions_key
from taxo_pipeline.defs.ingest.assets import GROUP as DATA_GROUP
from taxo_pipeline.defs.models.partitions import PartitionModels, dynamic_partitions, partition_key
from taxo_pipeline.defs.runner.runs import check_sources, source_run_config
from taxo_pipeline.evaluation.evaluate import headline
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.reports import report_for, write_report
from taxo_pipeline.evaluation.store import latency, load_metrics
from taxo_pipeline.retrieval.variants import VARIANTS, variants_read
from taxo_pipeline.sie.model_catalogue import model_slug
from taxo_pipeline.sie.server import ensure_sie

log = logging.getLogger("taxo_pipeline")
INDEX_ASSET = "category_embeddings"


def build_parser(approach: Approach, prog: str, add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Evaluate {approach.name} ({approach.description}) The run shows in the Dagster UI.",
        add_help=add_help,
    )
    add_model_arguments(parser, approach)
    add_source_arguments(parser)
    parser.add_argument("--output", type=Path, help="JSON report path (default: eval/<approach>/<models>.json)")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N products (kept apart from the full results)")
    if approach.partitioning != "nli_model":
        parser.add_argument("--rebuild", action="store_true", help="re-encode the categories and rebuild the index")
    return parser


@dataclass(frozen=True)
class Run:
    selection: list[dg.AssetKey]
    partitioning: str
    models: PartitionModels


def evaluation_runs(approach: Approach, models: PartitionModels) -> list[Run]:
    """The partition runs the approach needs, upstream first: the category index of every variant
    it reads (its partition's, or those behind its `documents`), the approaches it reads, then its own
    predictions and metrics."""
    registered = {a.name: a for a in approaches(settings.current().approaches)}
    runs: list[Run] = []
    for read in approach.reads:
        runs += evaluation_runs(registered[read], PartitionModels(models.model, models.variant))
    if approach.partitioning in (MODEL_VARIANT, MODEL) and not runs:
        for variant in variants_read(approach.documents) if approach.partitioning == MODEL else (models.variant,):
            runs.append(Run([dg.AssetKey(INDEX_ASSET)], MODEL_VARIANT, PartitionModels(models.model, variant)))
    own = [predictions_key(approach), dg.AssetKey(f"{approach.slug}_metrics")]
    return [*runs, Run(own, approach.partitioning, models)]


def _run_config(args: argparse.Namespace, selection: list[dg.AssetKey]) -> dict:
    """Run config for the selected assets: the index's rebuild flag, and top-k, limit (and the
    reranked variant) for every predictions asset."""
    ops = {}
    reranked = {predictions_key(a).path[-1] for a in approaches(settings.current().approaches) if a.partitioning == RERANKER_RETRIEVER}
    for key in selection:
        name = key.path[-1]
        if name == INDEX_ASSET:
            ops[name] = {"config": {"rebuild": getattr(args, "rebuild", False)}}
        elif name.endswith("_predictions"):
            ops[name] = {"config": {"top_k": args.top_k, "limit": args.limit}}
            if name in reranked:
                ops[name]["config"]["variant"] = args.variant
    return ops


def evaluate(approach: Approach, args: argparse.Namespace) -> ResultKey:
    """Materialize the data assets and the approach's runs; the key of the results they wrote."""
    models, store = partition_models(args), storage(args)
    runs = evaluation_runs(approach, models)
    check_sources(store, {"products": args.products, "taxonomy": args.taxonomy})
    workspace, called = store.workspace(), list(dict.fromkeys(m for run in runs for m in run.models.ids))
    with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, called, logger=log) as url:
        sources = source_run_config(args.products, args.taxonomy)
        materialize(dg.AssetSelection.groups(DATA_GROUP), sie_url=None, ops_config=sources, storage=store)
        for run in runs:
            result = materialize(
                run.selection, sie_url=url, ops_config=_run_config(args, run.selection), storage=store,
                partition_key=partition_key(run.partitioning, run.models),
                dynamic_partitions=dynamic_partitions(run.partitioning, run.models),
            )  # fmt: skip
    written = result.output_for_node(predictions_key(approach).path[-1])
    if "skipped" in written:
        raise LookupError(f"{approach.name} {models.model}: {written['skipped']}")
    return ResultKey(**written)


def default_output(key: ResultKey) -> Path:
    parts = [model_slug(key.model), *([key.variant] if key.variant in VARIANTS else [])]
    parts += [model_slug(key.reranker)] if key.reranker else []
    return Path("eval") / key.approach / ("-".join(parts).replace("/", "-") + ".json")


def run_eval(approach: Approach, args: argparse.Namespace) -> int:
    key = evaluate(approach, args)
    warehouse = storage(args).warehouse()
    metrics, count = load_metrics(warehouse, key)
    report = report_for(
        approach.report, key=key, args=args, count=count, metrics=metrics, index_dir=storage(args).index_path(),
        latencies={stage: latency(warehouse, key, stage) for stage in ("query_encode", approach.stage)},
    )  # fmt: skip
    output = args.output or default_output(key)
    write_report(report, output)
    word = "L1 F1" if "f1" in metrics["strict"] else "hF1"
    print(f"{key}: {count} products, {word} strict {headline(metrics, 'strict'):.3f}, lenient {headline(metrics, 'lenient'):.3f}"
          f" ({approach.evaluation})")  # fmt: skip
    print(f"wrote {output}")
    return 0


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    add_approach_subcommands(subparsers, "eval", "evaluate one approach for one partition; writes the reference's JSON", build_parser, run_eval)


eval_text_retrieval = approach_entry("text-retrieval", "eval-text-retrieval", build_parser, run_eval)
eval_image_retrieval = approach_entry("image-retrieval", "eval-image-retrieval", build_parser, run_eval)
eval_nli = approach_entry("nli", "eval-nli", build_parser, run_eval)
eval_reranking = approach_entry("reranking", "eval-reranking", build_parser, run_eval)

if __name__ == "__main__":
    sys.exit(eval_text_retrieval())
