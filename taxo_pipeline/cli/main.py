"""The `taxo-pipeline` command. Each subcommand is one `add_*` function registered in SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from taxo_pipeline.cli.arguments import model_id
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.dev import add_dev
from taxo_pipeline.cli.evaluate import add_eval
from taxo_pipeline.cli.materialize import add_materialize
from taxo_pipeline.cli.predict import add_predict
from taxo_pipeline.cli.serve import add_serve
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.sie.server import lazy_sie
from taxo_pipeline.workspace import Workspace


def add_encode(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode texts with an SIE model, through the warehouse embedding cache",
        description="Encode texts with an SIE model. Without SIE_BASE_URL a local server is started and stopped, "
        "unless every text is in the embedding cache.",
    )
    parser.add_argument("--model", required=True, type=model_id, help="model id, e.g. sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--query", action="store_true", help="encode as queries (is_query=True)")
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    parser.set_defaults(run=run_encode)


def run_encode(args: argparse.Namespace) -> int:
    model = args.model
    log = logging.getLogger("taxo_pipeline")
    workspace = Workspace.from_env()
    catalogue = load_catalogue(workspace.settings.models)
    cache = EmbeddingCache(workspace.warehouse, catalogue)
    # The server starts only if a text is not in the cache.
    with (
        lazy_sie(workspace.sie, workspace.data_dir, catalogue, [model], logger=log) as sie,
        InferenceClient(sie, workspace.sie, cache=cache, logger=log) as client,
    ):
        encoded = client.encode_detailed(model, args.texts, is_query=args.query)
    for text, vector, cached in zip(args.texts, encoded.vectors, encoded.from_cache):
        head = ", ".join(f"{x:+.4f}" for x in vector[:4])
        print(f"{'cache' if cached else 'sie  '}  dim={vector.shape[0]}  [{head}, ...]  {text}")
    print(f"SIE requests: {client.request_count}")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_encode, add_materialize, add_eval, add_predict, add_dev, add_serve
]


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
