"""`predict-*` commands: classify one product from the command line, printing `label<TAB>score`
(or `path<TAB>distance`) lines, then latency lines."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from taxo_pipeline import settings
from taxo_pipeline.assets.plan import model_variant_key
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.evaluate import add_index_arguments, add_source_arguments, use_index_dir
from taxo_pipeline.cli.runs import materialize, source_run_config
from taxo_pipeline.dataset.taxonomy import TaxonomyL3
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.catalogue import model_slug, validate_model_id
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.warehouse import Warehouse

log = logging.getLogger("taxo_pipeline")


@contextmanager
def _client(models: Sequence[str]) -> Iterator[tuple[str, InferenceClient]]:
    cache = EmbeddingCache(Warehouse(settings.warehouse_path()))
    with ensure_sie(models=list(models), logger=log) as url, InferenceClient(url, cache=cache, logger=log) as client:
        yield url, client


def _ensure_index(model: str, variant: str, taxonomy: str | None, sie_url: str) -> CategoryIndex:
    """The model's category index, built through Dagster when this directory has none yet."""
    index = CategoryIndex(settings.index_dir(), model_slug(model), variant)
    if not index.count():
        log.info("no index for %s %s in %s: building it", model, variant, index.directory)
        materialize(
            ["raw_taxonomy", "taxonomy_l3", "category_embeddings"], sie_url=sie_url,
            ops_config=source_run_config(None, taxonomy), partition_key=model_variant_key(model, variant),
            dynamic_partitions={"encoder_model": [model]},
        )
    return index


def _print_latencies(**seconds: float) -> None:
    for name, value in seconds.items():
        print(f"{name}\t{value * 1000:.1f}")


def _retrieval_parser(prog: str, what: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"Print the top-k categories for one {what}.")
    add_index_arguments(parser)
    add_source_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5)
    return parser


def _predict_retrieval(args: argparse.Namespace, query: str | bytes) -> int:
    use_index_dir(args.index_dir)
    with _client([args.model]) as (url, client):
        index = _ensure_index(args.model, args.variant, args.taxonomy, url)
        started = time.perf_counter()
        vector = client.encode(args.model, [query], is_query=True)
        encoded = time.perf_counter()
        (matches,) = index.query(vector, args.top_k)
        searched = time.perf_counter()
    for match in matches:
        print(f"{match.path}\t{match.distance:.4f}")
    _print_latencies(encode_latency_ms=encoded - started, search_latency_ms=searched - encoded)
    return 0


def _predict_text_retrieval(argv: Sequence[str] | None) -> int:
    parser = _retrieval_parser("predict-text-retrieval", "product description")
    parser.add_argument("--description", required=True, help="the product description to classify")
    args = parser.parse_args(argv)
    return _predict_retrieval(args, args.description)


def _predict_image_retrieval(argv: Sequence[str] | None) -> int:
    parser = _retrieval_parser("predict-image-retrieval", "product image")
    parser.add_argument("--image-path", required=True, type=Path, help="a JPEG/PNG/WebP image of the product")
    args = parser.parse_args(argv)
    if not args.image_path.is_file():
        raise FileNotFoundError(f"image file {args.image_path} does not exist")
    return _predict_retrieval(args, args.image_path.read_bytes())


def _l1_labels(taxonomy: str | None, sie_url: str) -> list[str]:
    path = Path(settings.data_dir()) / settings.TAXONOMY_L3_FILE
    if taxonomy or not path.exists():
        materialize(["raw_taxonomy", "taxonomy_l3"], sie_url=sie_url, ops_config=source_run_config(None, taxonomy))
    return TaxonomyL3(pl.read_parquet(path)["path"].to_list()).l1_labels()


def _predict_nli(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="predict-nli", description="Print the top-k L1 labels for one description.")
    parser.add_argument("--model", required=True, type=validate_model_id, help="SIE NLI model id (org/name)")
    parser.add_argument("--description", required=True, help="the product description to classify")
    parser.add_argument("--top-k", type=int, default=5)
    add_source_arguments(parser)
    args = parser.parse_args(argv)
    with _client([args.model]) as (url, client):
        labels = _l1_labels(args.taxonomy, url)
        started = time.perf_counter()
        (ranked,) = client.extract(args.model, [args.description], labels)
        elapsed = time.perf_counter() - started
    for entry in ranked[: args.top_k]:
        print(f"{entry['label']}\t{entry['score']:.4f}")
    _print_latencies(latency_ms=elapsed)
    return 0


def _predict_reranking(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="predict-reranking", description="Retrieve the top-k categories for one description, then rerank them."
    )
    add_index_arguments(parser, model_flag="--retrieval-model")
    parser.add_argument("--reranker-model", required=True, type=validate_model_id, help="SIE reranker id (org/name)")
    parser.add_argument("--description", required=True, help="the product description to classify")
    parser.add_argument("--top-k", type=int, default=5)
    add_source_arguments(parser)
    args = parser.parse_args(argv)
    use_index_dir(args.index_dir)
    with _client([args.retrieval_model, args.reranker_model]) as (url, client):
        index = _ensure_index(args.retrieval_model, args.variant, args.taxonomy, url)
        started = time.perf_counter()
        (matches,) = index.query(client.encode(args.retrieval_model, [args.description], is_query=True), args.top_k)
        retrieved = time.perf_counter()
        paths = [m.path for m in matches]
        scores = client.score(args.reranker_model, args.description, paths)
        reranked = time.perf_counter()
    for path, score in sorted(zip(paths, scores), key=lambda pair: pair[1], reverse=True):
        print(f"{path}\t{score:.4f}")
    _print_latencies(retrieval_latency_ms=retrieved - started, reranking_latency_ms=reranked - retrieved)
    return 0


def predict_text_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command("predict-text-retrieval", _predict_text_retrieval, argv)


def predict_image_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command("predict-image-retrieval", _predict_image_retrieval, argv)


def predict_nli(argv: Sequence[str] | None = None) -> int:
    return run_command("predict-nli", _predict_nli, argv)


def predict_reranking(argv: Sequence[str] | None = None) -> int:
    return run_command("predict-reranking", _predict_reranking, argv)


if __name__ == "__main__":
    sys.exit(predict_text_retrieval())
