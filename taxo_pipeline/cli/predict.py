"""`taxo-pipeline predict APPROACH` (and the reference's `predict-*` commands): classify one product
from the command line with any registered approach, printing `label<TAB>score` lines best first
(`path<TAB>distance` for the reference's retrieval), then the latency of each SIE stage and in all."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

from taxo_pipeline import settings
from taxo_pipeline.approaches.evidence import workspace_evidence
from taxo_pipeline.approaches.spec import HIERARCHICAL, Approach, ClassifyRequest
from taxo_pipeline.classification.calibration import features
from taxo_pipeline.classification.evaluated import choose, load_calibration
from taxo_pipeline.cli.arguments import (
    add_approach_subcommands,
    add_model_arguments,
    add_source_arguments,
    approach_entry,
    partition_models,
    storage,
)
from taxo_pipeline.cli.common import materialize
from taxo_pipeline.cli.evaluate import INDEX_ASSET, evaluation_runs
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.dataset.tables import load_corrections, load_experiment, load_trimmed_taxonomy
from taxo_pipeline.defs.ingest.assets import GROUP as DATA_GROUP
from taxo_pipeline.defs.models.partitions import PartitionModels, dynamic_partitions, partition_key
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.defs.runner.runs import check_sources, source_run_config
from taxo_pipeline.errors import InputError
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue, model_slug
from taxo_pipeline.sie.server import LazySIE, lazy_sie
from taxo_pipeline.workspace import Workspace

log = logging.getLogger("taxo_pipeline")
INDEX_KEY = dg.AssetKey(INDEX_ASSET)
EXPERIMENT_KEY = dg.AssetKey("products_experiment")


def build_parser(approach: Approach, prog: str, add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Classify one product with {approach.name}: {approach.description}", add_help=add_help
    )
    add_model_arguments(parser, approach)
    add_source_arguments(parser)
    parser.add_argument("--title", default="", help="the product title (approaches that read it)")
    if approach.query == "image":
        parser.add_argument("--image-path", required=True, type=Path, help="a JPEG/PNG/WebP image of the product")
        parser.set_defaults(description="")
    else:
        parser.add_argument("--description", required=True, help="the product description to classify")
    return parser


def _product(args: argparse.Namespace) -> pl.DataFrame:
    row = {"product_id": ["cli"], "product_title": [args.title], "product_description": [args.description]}
    if path := getattr(args, "image_path", None):
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        row[IMAGE] = [{"bytes": path.read_bytes(), "path": str(path)}]
    return pl.DataFrame(row)


def _data_to_build(
    approach: Approach, args: argparse.Namespace, store: WorkspaceResource
) -> tuple[dg.AssetSelection, dict] | None:
    """The data assets to build first, and their run config, when a source is named or this folder lacks a
    table the approach reads: the taxonomy tables the category index is made of, and the labelled products
    only for an approach that learns from them. Their sources are checked here, before any server starts."""
    depth = settings.current().depth
    sources, reads = {"taxonomy": args.taxonomy}, [INDEX_KEY]
    tables = [settings.taxonomy_file(depth), settings.TAXONOMY_FULL_DEPTH_FILE]
    if approach.needs_labels:
        sources["products"] = args.products
        reads.append(EXPERIMENT_KEY)
        tables.append(settings.experiment_file(depth))
    if not any(sources.values()) and all(store.data_path(t).exists() for t in tables):
        return None
    check_sources(store, sources)
    selection = dg.AssetSelection.assets(*reads).upstream() & dg.AssetSelection.groups(DATA_GROUP)
    return selection, source_run_config(sources.get("products"), sources["taxonomy"])


def _build_indexes(approach: Approach, args: argparse.Namespace, store: WorkspaceResource, sie: LazySIE) -> None:
    """Build the category indexes of the approach's partition this folder lacks (not its own predictions)."""
    depth = settings.current().depth
    for run in evaluation_runs(approach, partition_models(args))[:-1]:
        model, variant = run.models.model, run.models.variant
        if run.selection == [INDEX_KEY] and not CategoryIndex(store.index_path(), model_slug(model), variant, depth).count():
            log.info("no index for %s %s in %s: building it", model, variant, store.index_path())
            materialize(run.selection, sie_url=sie(), storage=store,
                        partition_key=partition_key(run.partitioning, run.models),
                        dynamic_partitions=dynamic_partitions(run.partitioning, run.models))  # fmt: skip


def run_predict(approach: Approach, args: argparse.Namespace) -> int:
    models, store = partition_models(args), storage(args)
    workspace = store.workspace()
    catalogue = load_catalogue(workspace.settings.models)
    known = {spec.id: spec.family for spec in catalogue}
    data = _data_to_build(approach, args, store)
    # The server starts when an index is missing or an input is not in the embedding cache.
    with lazy_sie(workspace.sie, workspace.data_dir, catalogue, list(models.ids), logger=log) as sie:
        if data:
            materialize(data[0], sie_url=None, ops_config=data[1], storage=store)
        _build_indexes(approach, args, store, sie)
        taxonomy = load_trimmed_taxonomy(workspace)
        cache = EmbeddingCache(workspace.warehouse, catalogue)
        variant = models.variant or approach.documents
        with InferenceClient(sie, workspace.sie, cache=cache, logger=log) as client:
            evidence = workspace_evidence(workspace, client, taxonomy, variant)
            request = ClassifyRequest(
                _product(args), taxonomy, evidence, models.model, variant, known.get(models.model, "text"),
                models.reranker, args.top_k, approach.batch_size,
                labelled=load_experiment(workspace) if approach.needs_labels else None,
                corrections=load_corrections(workspace) if approach.needs_labels else None,
            )  # fmt: skip
            started = time.perf_counter()
            classified = approach.classify(request)
            elapsed = time.perf_counter() - started
            live = {record.request_id for record in client.latencies}  # not the cache's replayed requests
    for why in classified.skipped.values():
        print(f"{approach.name}: product skipped: {why}", file=sys.stderr)
    ranked = classified.ranked[0] if classified.ranked else []
    print(f"# {approach.name}, {' + '.join(models.ids)}, {variant} documents: top {len(ranked)}, best first")
    print(f"# score: {approach.score}")
    for category, score in ranked:
        print(f"{category}\t{1.0 - score if approach.prints_distance else score:.4f}")
    if ranked:
        print(f"# {_confidence(approach, models, workspace, ranked)}")
    for stage, records in evidence.requests.items():
        if measured := [r.latency_ms for r in records if r.request_id in live]:
            print(f"{stage}_latency_ms\t{sum(measured):.1f}")
    print(f"total_latency_ms\t{elapsed * 1000:.1f}")
    return 0 if classified.ranked else 1


def _confidence(approach: Approach, models: PartitionModels, workspace: Workspace, ranked: list) -> str:
    """The calibrated confidence of the top category, from the calibration stored when the approach was scored."""
    if approach.headline != HIERARCHICAL:
        return "confidence: none (an L1-only approach is not calibrated)"
    try:
        enabled = [spec.id for spec in load_catalogue(workspace.settings.models).enabled()]
        key = choose(workspace, enabled, approach.name, models.model, models.variant or approach.documents).key
        confidence = load_calibration(workspace.warehouse, key).confidence(features([ranked]))[0]
    except (InputError, LookupError, FileNotFoundError) as exc:
        return f"confidence: none stored ({exc})"
    return f"confidence that the top category is right: {confidence:.2f} (calibrated on the evaluation, held-out folds)"


def add_predict(subparsers: argparse._SubParsersAction) -> None:
    add_approach_subcommands(subparsers, "predict", "classify one product with one approach and print its top-k", build_parser, run_predict)


predict_text_retrieval = approach_entry("text-retrieval", "predict-text-retrieval", build_parser, run_predict)
predict_image_retrieval = approach_entry("image-retrieval", "predict-image-retrieval", build_parser, run_predict)
predict_nli = approach_entry("nli", "predict-nli", build_parser, run_predict)
predict_reranking = approach_entry("reranking", "predict-reranking", build_parser, run_predict)

if __name__ == "__main__":
    sys.exit(predict_text_retrieval())
