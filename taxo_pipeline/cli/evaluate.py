"""`eval-*` commands: materialize partitions through Dagster (so each run shows in the UI and its rows
land in the warehouse), then write the reference's JSON."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.assets.plan import (
    DATA_ASSETS,
    IMAGE_RETRIEVAL_ASSETS,
    NLI_ASSETS,
    RERANKING_ASSETS,
    TEXT_RETRIEVAL_ASSETS,
    model_variant_key,
    reranking_key,
)
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.runs import materialize, source_run_config
from taxo_pipeline.evaluation.reports import nli_report, reranking_report, retrieval_report, write_report
from taxo_pipeline.evaluation.store import Partition, latency, load_metrics
from taxo_pipeline.retrieval.categories import VARIANTS
from taxo_pipeline.sie.catalogue import model_slug, validate_model_id
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.warehouse import Warehouse

log = logging.getLogger("taxo_pipeline")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--products", help="products file or URL (default: $TAXO_PRODUCTS, else the HF shard)")
    parser.add_argument("--taxonomy", help="categories.txt path or URL (default: $TAXO_TAXONOMY, else Shopify's)")


def add_index_arguments(parser: argparse.ArgumentParser, model_flag: str = "--model") -> None:
    parser.add_argument(model_flag, required=True, type=validate_model_id, help="SIE model id (org/name)")
    parser.add_argument("--variant", choices=VARIANTS, default="full-path", help="category document: full path or leaf")
    parser.add_argument("--index-dir", type=Path, help="Chroma directory (default: $TAXO_INDEX_DIR, else data/chroma)")


def use_index_dir(index_dir: Path | None) -> None:
    if index_dir:  # the in-process run reads it when it builds its resources
        os.environ["TAXO_INDEX_DIR"] = str(index_dir.resolve())


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--output", type=Path, help="JSON report path (default: eval/<approach>/<models>.json)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N products")


def _default_output(approach: str, *parts: str) -> Path:
    return Path("eval") / approach / ("-".join(parts).replace("/", "-") + ".json")


def _finish(report: dict, output: Path, headline: str) -> int:
    write_report(report, output)
    print(headline)
    print(f"wrote {output}")
    return 0


def _retrieval_eval(prog: str, approach: str, assets: tuple[str, ...], argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Evaluate {approach} for one model and variant; the run shows in the Dagster UI."
    )
    add_index_arguments(parser)
    _add_eval_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5, help="candidates stored per product (default 5)")
    parser.add_argument("--rebuild", action="store_true", help="re-encode the categories and rebuild the index")
    args = parser.parse_args(argv)
    use_index_dir(args.index_dir)
    ops = source_run_config(args.products, args.taxonomy)
    ops["category_embeddings"] = {"config": {"rebuild": args.rebuild}}
    ops[assets[1]] = {"config": {"top_k": args.top_k, "limit": args.limit}}
    with ensure_sie(models=[args.model], logger=log) as url:
        materialize(
            [*DATA_ASSETS, *assets], sie_url=url, ops_config=ops,
            partition_key=model_variant_key(args.model, args.variant), dynamic_partitions={"encoder_model": [args.model]},
        )
    warehouse = Warehouse(settings.warehouse_path())
    partition = Partition(approach, args.model, args.variant)
    metrics, count = load_metrics(warehouse, partition)
    report = retrieval_report(
        model=args.model, variant=args.variant, index_dir=settings.index_dir(), rebuild=args.rebuild,
        limit=args.limit, count=count, metrics=metrics, latency=latency(warehouse, partition, "query_encode"),
    )
    strict, lenient = metrics["strict"]["hierarchical"]["f1"], metrics["lenient"]["hierarchical"]["f1"]
    return _finish(
        report, args.output or _default_output(approach, model_slug(args.model), args.variant),
        f"{approach} {args.model} {args.variant}: {count} products, hF1 strict {strict:.3f}, lenient {lenient:.3f}",
    )


def _eval_nli(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="eval-nli", description="Evaluate a zero-shot NLI model on the 26 L1 labels.")
    parser.add_argument("--model", required=True, type=validate_model_id, help="SIE model id (org/name)")
    _add_eval_arguments(parser)
    args = parser.parse_args(argv)
    ops = source_run_config(args.products, args.taxonomy)
    ops["nli_predictions"] = {"config": {"limit": args.limit}}
    with ensure_sie(models=[args.model], logger=log) as url:
        materialize(
            [*DATA_ASSETS, *NLI_ASSETS], sie_url=url, ops_config=ops,
            partition_key=args.model, dynamic_partitions={"nli_model": [args.model]},
        )
    warehouse = Warehouse(settings.warehouse_path())
    partition = Partition("nli", args.model, "l1")
    metrics, count = load_metrics(warehouse, partition)
    report = nli_report(
        model=args.model, limit=args.limit, count=count, metrics=metrics, latency=latency(warehouse, partition, "extract")
    )
    return _finish(
        report, args.output or _default_output("nli", model_slug(args.model)),
        f"nli {args.model}: {count} products, L1 F1 strict {metrics['strict']['f1']:.3f}, lenient {metrics['lenient']['f1']:.3f}",
    )


def _eval_reranking(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="eval-reranking", description="Evaluate a reranker on a text retriever's top-k candidates."
    )
    add_index_arguments(parser, model_flag="--retrieval-model")
    parser.add_argument("--reranker-model", required=True, type=validate_model_id, help="SIE reranker id (org/name)")
    _add_eval_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5, help="retrieved candidates rescored per product (default 5)")
    parser.add_argument("--rebuild", action="store_true", help="re-encode the categories and rebuild the index")
    args = parser.parse_args(argv)
    use_index_dir(args.index_dir)
    retriever, reranker = args.retrieval_model, args.reranker_model
    ops = source_run_config(args.products, args.taxonomy)
    ops["category_embeddings"] = {"config": {"rebuild": args.rebuild}}
    ops["text_retrieval_predictions"] = {"config": {"top_k": args.top_k, "limit": args.limit}}
    rerank_ops = {name: {"config": {"variant": args.variant, "top_k": args.top_k}} for name in RERANKING_ASSETS}
    with ensure_sie(models=[retriever, reranker], logger=log) as url:
        materialize(
            [*DATA_ASSETS, *TEXT_RETRIEVAL_ASSETS], sie_url=url, ops_config=ops,
            partition_key=model_variant_key(retriever, args.variant), dynamic_partitions={"encoder_model": [retriever]},
        )
        materialize(
            RERANKING_ASSETS, sie_url=url, ops_config=rerank_ops, partition_key=reranking_key(reranker, retriever),
            dynamic_partitions={"rerank_model": [reranker], "encoder_model": [retriever]},
        )
    warehouse = Warehouse(settings.warehouse_path())
    partition = Partition("reranking", f"{retriever} + {reranker}", args.variant)
    metrics, count = load_metrics(warehouse, partition)
    report = reranking_report(
        retrieval_model=retriever, reranker_model=reranker, variant=args.variant, index_dir=settings.index_dir(),
        rebuild=args.rebuild, top_k=args.top_k, limit=args.limit, count=count, metrics=metrics,
        retrieval_latency=latency(warehouse, Partition("text-retrieval", retriever, args.variant), "query_encode"),
        reranking_latency=latency(warehouse, partition, "rerank"),
    )
    strict, lenient = metrics["strict"]["hierarchical"]["f1"], metrics["lenient"]["hierarchical"]["f1"]
    return _finish(
        report, args.output or _default_output("reranking", model_slug(retriever), args.variant, model_slug(reranker)),
        f"reranking {retriever} + {reranker} {args.variant}: {count} products, hF1 strict {strict:.3f}, lenient {lenient:.3f}",
    )


def eval_text_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command(
        "eval-text-retrieval",
        lambda a: _retrieval_eval("eval-text-retrieval", "text-retrieval", TEXT_RETRIEVAL_ASSETS, a),
        argv,
    )


def eval_image_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command(
        "eval-image-retrieval",
        lambda a: _retrieval_eval("eval-image-retrieval", "image-retrieval", IMAGE_RETRIEVAL_ASSETS, a),
        argv,
    )


def eval_nli(argv: Sequence[str] | None = None) -> int:
    return run_command("eval-nli", _eval_nli, argv)


def eval_reranking(argv: Sequence[str] | None = None) -> int:
    return run_command("eval-reranking", _eval_reranking, argv)


if __name__ == "__main__":
    sys.exit(eval_text_retrieval())
