"""`taxo-pipeline eval APPROACH` (and the reference's `eval-*` commands): materialize the approach's
partition through Dagster, so the run shows in the UI and its rows land in the warehouse, then write
the reference's JSON. Built from the approach registry: every registered approach has the command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import MODEL, MODEL_VARIANT, RERANKER_RETRIEVER, Approach
from taxo_pipeline.cli.arguments import (
    add_model_arguments,
    add_source_arguments,
    partition_models,
    positive_int,
    storage,
)
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.runs import materialize, source_run_config
from taxo_pipeline.defs.evaluate.assets import predictions_key
from taxo_pipeline.defs.ingest.assets import GROUP as DATA_GROUP
from taxo_pipeline.defs.models.partitions import PartitionModels, dynamic_partitions, partition_key
from taxo_pipeline.evaluation.evaluate import headline
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.reports import report_for, write_report
from taxo_pipeline.evaluation.store import latency, load_metrics
from taxo_pipeline.retrieval.variants import VARIANTS, variants_read
from taxo_pipeline.sie.catalogue import model_slug
from taxo_pipeline.sie.local_server import ensure_sie

log = logging.getLogger("taxo_pipeline")
INDEX_ASSET = "category_embeddings"


def build_parser(approach: Approach, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Evaluate {approach.name} ({approach.description}) The run shows in the Dagster UI."
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
    registered = {a.name: a for a in approaches()}
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
    reranked = {predictions_key(a).path[-1] for a in approaches() if a.partitioning == RERANKER_RETRIEVER}
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
    with ensure_sie(models=list(dict.fromkeys(m for run in runs for m in run.models.ids)), logger=log) as url:
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


def eval_command(approach_name: str, prog: str):
    """The console-script entry point of one approach's eval command."""

    def entry(argv: Sequence[str] | None = None) -> int:
        def run(argv_: Sequence[str] | None) -> int:
            approach = approach_named(approach_name)
            return run_eval(approach, build_parser(approach, prog).parse_args(argv_))

        return run_command(prog, run, argv)

    return entry


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    """`taxo-pipeline eval APPROACH ...`: one sub-subcommand per registered approach."""
    parser = subparsers.add_parser("eval", help="evaluate one approach for one partition; writes the reference's JSON")
    per_approach = parser.add_subparsers(dest="approach", required=True, metavar="APPROACH")
    for approach in approaches():
        sub = per_approach.add_parser(approach.name, help=approach.description)
        for action in build_parser(approach, approach.name)._actions[1:]:
            sub._add_action(action)
        sub.set_defaults(run=lambda args, a=approach: run_eval(a, args))


eval_text_retrieval = eval_command("text-retrieval", "eval-text-retrieval")
eval_image_retrieval = eval_command("image-retrieval", "eval-image-retrieval")
eval_nli = eval_command("nli", "eval-nli")
eval_reranking = eval_command("reranking", "eval-reranking")

if __name__ == "__main__":
    sys.exit(eval_text_retrieval())
