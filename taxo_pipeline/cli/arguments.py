"""Command-line arguments every approach command shares, derived from the approach's partitioning: the
models it runs (`--model`, or `--retrieval-model` and `--reranker-model`), the category-document
variant, the sources and the index folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import MODEL, MODEL_VARIANT, NLI_MODEL, RERANKER_RETRIEVER, Approach
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.defs.models.partitions import PartitionModels
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.retrieval.variants import VARIANTS
from taxo_pipeline.sie.model_catalogue import validate_model_id

FAMILY_WORD = {MODEL_VARIANT: "encoder", MODEL: "encoder", NLI_MODEL: "NLI model"}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def model_id(text: str) -> str:
    """A --model argument: argparse would replace the reason with "invalid validate_model_id value"."""
    try:
        return validate_model_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. sentence-transformers/all-MiniLM-L6-v2)") from None


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--products", help="products file or URL (default: $TAXO_PRODUCTS, else the HF shard)")
    parser.add_argument("--taxonomy", help="categories.txt path or URL (default: $TAXO_TAXONOMY, else Shopify's)")


def add_model_arguments(parser: argparse.ArgumentParser, approach: Approach) -> None:
    if approach.partitioning == RERANKER_RETRIEVER:
        parser.add_argument("--retrieval-model", dest="model", required=True, type=model_id,
                            help="SIE encoder that retrieves the candidates (org/name)")  # fmt: skip
        parser.add_argument("--reranker-model", dest="reranker", required=True, type=model_id,
                            help="SIE reranker id (org/name)")  # fmt: skip
    else:
        word = FAMILY_WORD[approach.partitioning]
        parser.add_argument("--model", required=True, type=model_id, help=f"SIE {word} id (org/name)")
    if approach.partitioning in (MODEL_VARIANT, RERANKER_RETRIEVER):
        parser.add_argument("--variant", choices=VARIANTS, default="full-path",
                            help="category documents: full path, leaf name, or every node of the full taxonomy")  # fmt: skip
    if approach.partitioning != NLI_MODEL:
        parser.add_argument("--index-dir", type=Path, help="Chroma directory (default: $TAXO_INDEX_DIR, else data/chroma)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="candidates per product (default 5)")


def partition_models(args: argparse.Namespace) -> PartitionModels:
    return PartitionModels(args.model, getattr(args, "variant", None), getattr(args, "reranker", None))


def storage(args: argparse.Namespace) -> WorkspaceResource:
    index_dir = getattr(args, "index_dir", None)
    return WorkspaceResource(index_dir=str(index_dir.resolve()) if index_dir else None)


# (approach, prog, add_help) -> the command's parser; (approach, parsed arguments) -> exit code
ParserBuilder = Callable[[Approach, str, bool], argparse.ArgumentParser]
ApproachCommand = Callable[[Approach, argparse.Namespace], int]


def approach_entry(approach_name: str, prog: str, build: ParserBuilder, command: ApproachCommand):
    """A console-script entry point (`eval-nli`, `predict-nli` ...) running `command` for one approach."""

    def entry(argv: Sequence[str] | None = None) -> int:
        def run(argv_: Sequence[str] | None) -> int:
            approach = approach_named(approach_name, settings.current().approaches)
            return command(approach, build(approach, prog, True).parse_args(argv_))

        return run_command(prog, run, argv)

    return entry


def add_approach_subcommands(
    subparsers: argparse._SubParsersAction, name: str, help_text: str, build: ParserBuilder, command: ApproachCommand
) -> None:
    """`taxo-pipeline NAME APPROACH ...`: one sub-subcommand per registered approach."""
    parser = subparsers.add_parser(name, help=help_text)
    per_approach = parser.add_subparsers(dest="approach", required=True, metavar="APPROACH")
    for approach in approaches(settings.current().approaches):
        sub = per_approach.add_parser(
            approach.name, help=approach.description, parents=[build(approach, approach.name, False)]
        )
        sub.set_defaults(run=lambda args, a=approach: command(a, args))
