"""`predict-*` commands: classify one product from the command line against a built index."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from taxo_pipeline import settings
from taxo_pipeline.cli.common import run_command
from taxo_pipeline.cli.evaluate import add_index_arguments, add_source_arguments
from taxo_pipeline.cli.runs import materialize, source_run_config
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.catalogue import model_slug
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.local_server import ensure_sie
from taxo_pipeline.warehouse import Warehouse

log = logging.getLogger("taxo_pipeline")


def _ensure_index(args: argparse.Namespace, sie_url: str) -> CategoryIndex:
    """Build the model's category index through Dagster when this directory has none yet."""
    index = CategoryIndex(settings.index_dir(), model_slug(args.model), args.variant)
    if not index.count():
        log.info("no index for %s %s in %s: building it", args.model, args.variant, index.directory)
        materialize(
            ["raw_taxonomy", "taxonomy_l3", "category_embeddings"], partition=(args.model, args.variant),
            sie_url=sie_url, ops_config=source_run_config(None, args.taxonomy),
        )
    return index


def _predict_text_retrieval(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="predict-text-retrieval", description="Print the top-k categories for one product description."
    )
    add_index_arguments(parser)
    add_source_arguments(parser)
    parser.add_argument("--description", required=True, help="the product description to classify")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    if args.index_dir:
        os.environ["TAXO_INDEX_DIR"] = str(args.index_dir.resolve())
    cache = EmbeddingCache(Warehouse(settings.warehouse_path()))
    with ensure_sie(models=[args.model], logger=log) as url, InferenceClient(url, cache=cache, logger=log) as client:
        index = _ensure_index(args, url)
        started = time.perf_counter()
        vector = client.encode(args.model, [args.description], is_query=True)
        encoded = time.perf_counter()
        (matches,) = index.query(vector, args.top_k)
        searched = time.perf_counter()
    for match in matches:
        print(f"{match.path}\t{match.distance:.4f}")
    print(f"encode_latency_ms\t{(encoded - started) * 1000:.1f}")
    print(f"search_latency_ms\t{(searched - encoded) * 1000:.1f}")
    return 0


def predict_text_retrieval(argv: Sequence[str] | None = None) -> int:
    return run_command("predict-text-retrieval", _predict_text_retrieval, argv)


if __name__ == "__main__":
    sys.exit(predict_text_retrieval())
