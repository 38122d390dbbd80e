"""The `taxo-pipeline` command. Each subcommand is one `add_*` function registered in SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import dagster as dg
import polars as pl

from taxo_pipeline import settings
from taxo_pipeline.cli.arguments import add_source_arguments
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.evaluate import add_eval
from taxo_pipeline.cli.predict import add_predict
from taxo_pipeline.cli.runs import dagster_home, materialize, source_run_config
from taxo_pipeline.cli.up_to_date import SIGNATURE_TAG, code_versions, data_signature, is_up_to_date, signature
from taxo_pipeline.defs.ingest.assets import source_file
from taxo_pipeline.defs.models.sensors import apply_model_sync, model_sync
from taxo_pipeline.evaluation.leaderboard import leaderboard
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.sie.catalogue import load_catalogue, validate_model_id
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.dev_server import dev_sie
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.warehouse import Warehouse


def add_encode(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode texts with an SIE model, through the warehouse embedding cache",
        description="Encode texts with an SIE model. Without SIE_BASE_URL a local server is started and stopped.",
    )
    parser.add_argument("--model", required=True, help="model id, e.g. sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--query", action="store_true", help="encode as queries (is_query=True)")
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    parser.set_defaults(run=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    model = validate_model_id(args.model)
    log = logging.getLogger("taxo_pipeline")
    cache = EmbeddingCache(Warehouse(settings.warehouse_path()))
    with ensure_sie(models=[model], logger=log) as url, InferenceClient(url, cache=cache, logger=log) as client:
        encoded = client.encode_detailed(model, args.texts, is_query=args.query)
    for text, vector, cached in zip(args.texts, encoded.vectors, encoded.from_cache):
        head = ", ".join(f"{x:+.4f}" for x in vector[:4])
        print(f"{'cache' if cached else 'sie  '}  dim={vector.shape[0]}  [{head}, ...]  {text}")
    print(f"SIE requests: {client.request_count}")
    return 0


def add_materialize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "materialize",
        help="the main job: every asset, every partition of the enabled models, then the results",
        description="Materialize the data assets and every partition of the enabled models in the persistent "
        "Dagster instance (runs show in the UI), with one SIE server for all of them, then print the results. "
        "Runs whose sources, code and models are unchanged since this command last ran them are skipped; with "
        "nothing changed, no server starts and no model is called.",
    )
    add_source_arguments(parser)
    parser.set_defaults(run=run_materialize)


def run_materialize(args: argparse.Namespace) -> int:
    from taxo_pipeline.definitions import defs  # loading definitions is slow; only commands that run need it

    log = logging.getLogger("taxo_pipeline")
    catalogue = load_catalogue()
    dagster_home()
    instance = dg.DagsterInstance.get()
    # The same partitions and fingerprints the sensor keeps: disabled models leave the plan.
    sync = model_sync(instance, catalogue)
    apply_model_sync(instance, sync)
    versions = code_versions(defs.resolve_asset_graph())
    storage = StorageResource()
    sources = {what: source_file(storage, what, source)[1] for what, source in [("products", args.products), ("taxonomy", args.taxonomy)]}
    data_tag = data_signature(sources, versions)
    fresh_warehouse = not settings.warehouse_path().exists()
    if fresh_warehouse or not is_up_to_date(instance, DATA_ASSETS, None, data_tag):
        materialize(DATA_ASSETS, sie_url=None, ops_config=source_run_config(args.products, args.taxonomy), tags={SIGNATURE_TAG: data_tag})
    else:
        log.info("data assets: up to date (same sources and code)")
    plan, pending = evaluation_plan(catalogue), []
    for run in plan:
        # data_tag covers the sources and every asset's code version
        tag = signature(data=data_tag, partition=str(run.partition_key), selection=run.selection,
                        models={m: sync.fingerprints[m] for m in run.models})  # fmt: skip
        if fresh_warehouse or not is_up_to_date(instance, run.selection, str(run.partition_key), tag):
            pending.append((run, tag))
    log.info("partition runs: %d up to date, %d to run", len(plan) - len(pending), len(pending))
    if pending:
        # Only now start a server, and only for the models the pending runs call.
        with ensure_sie(models=sorted({m for run, _ in pending for m in run.models}), logger=log) as url:
            for number, (run, tag) in enumerate(pending, start=1):
                log.info("run %d/%d: %s for %s", number, len(pending), ", ".join(run.selection), run.partition_key)
                materialize(run.selection, sie_url=url, partition_key=run.partition_key, tags={SIGNATURE_TAG: tag})
    board = leaderboard(Warehouse(settings.warehouse_path()))
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=400, fmt_str_lengths=80, tbl_hide_dataframe_shape=True):
        print(board)
    return 0


def add_dev(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="the Dagster UI on the commands' instance, with one local SIE server for every run",
        description="Run `dagster dev` with DAGSTER_HOME shared with the commands and SIE_BASE_URL set (unless "
        "SIE_BASE_URL is already set, a local server that follows the model catalogue: models enabled while it "
        "runs are loaded, changed ones reloaded). Other arguments go to dagster dev: `dev -p 3001` or `dev -- -p 3001`.",
    )
    # main() hands the arguments this parser does not know to dagster dev.
    parser.set_defaults(run=run_dev, dagster_args=[])


def dagster_dev_command(dagster_args: Sequence[str]) -> list[str]:
    """`dagster dev` on the project's workspace, with the user's arguments (a leading `--` dropped)."""
    extra = list(dagster_args[1:] if dagster_args[:1] == ["--"] else dagster_args)
    return [sys.executable, "-m", "dagster", "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml"), *extra]


def run_dev(args: argparse.Namespace) -> int:
    home = dagster_home()
    with dev_sie(logger=logging.getLogger("taxo_pipeline")) as url:
        env = {**os.environ, "SIE_BASE_URL": url, "DAGSTER_HOME": str(home)}
        return subprocess.call(dagster_dev_command(args.dagster_args), env=env, cwd=settings.PROJECT_ROOT)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_encode, add_materialize, add_eval, add_predict, add_dev]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taxo-pipeline", description="Evaluate product-taxonomy classifiers served by SIE."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "dagster_args"):  # only `dev` passes arguments on
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.dagster_args = unknown
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(f"taxo-pipeline {args.command}", lambda _: args.run(args), argv, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
