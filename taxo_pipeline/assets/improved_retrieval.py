"""Beyond the reference (model x variant): four classifiers, each its own `approach` in the shared
`predictions` and `metrics` tables beside the reference's `text-retrieval`. Each adds one idea to
the one before it:

- `title-description`: the reference's nearest-category retrieval, queried with the title and
  the description instead of the description alone; the partition's variant picks the documents.
- `score-fusion`: leaf and full-path scores fused with equal weights, plus image scores where the
  same model has an image-retrieval partition of this variant (text and image weigh the same).
- `hierarchical-cascade`: the fused scores decoded L1 -> L2 -> L3 with aggregated node scores
  and the soft path rule (taxo_pipeline/retrieval/cascade.py).
- `label-transfer`: the cascade's scores plus votes of the nearest labelled products, under
  5-fold cross-validation (taxo_pipeline/retrieval/label_transfer.py); its rows say "5-fold cv".

The algorithms live in taxo_pipeline/retrieval/ (plain numpy); these assets only gather vectors and
store results. Vectors come through the SIE client and its embedding cache: the category vectors
are the ones category_embeddings stored (same cache keys; the other variant's are encoded here if
its partition has not run yet), and the title + description queries are encoded once, by the first
of these assets to run, then served from the cache. Search is exact numpy cosine (no Chroma index
to build or query), and requests carry 64 texts: only the reference reproduction keeps its 8.
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from taxo_pipeline.assets.category_index import category_embeddings
from taxo_pipeline.assets.dataset import load_experiment, load_taxonomy_l3, products_experiment_l3
from taxo_pipeline.assets.image_retrieval import APPROACH as IMAGE_APPROACH
from taxo_pipeline.assets.image_retrieval import image_retrieval_predictions
from taxo_pipeline.assets.metadata import hf1_chart_metadata, markdown_table, metrics_metadata
from taxo_pipeline.assets.partitions import model_variant, partition_keys
from taxo_pipeline.assets.text_retrieval import APPROACH as REFERENCE_APPROACH
from taxo_pipeline.assets.text_retrieval import text_retrieval_metrics
from taxo_pipeline.dataset.products import IMAGE
from taxo_pipeline.evaluation.metrics import at_level, evaluate_paths
from taxo_pipeline.evaluation.store import (
    PREDICTIONS,
    Partition,
    latency,
    load_metrics,
    save_latencies,
    save_metrics,
    save_predictions,
)
from taxo_pipeline.resources import StorageResource
from taxo_pipeline.retrieval.cascade import Hierarchy, hard_cascade, node_scores, path_scores
from taxo_pipeline.retrieval.categories import VARIANTS, category_documents
from taxo_pipeline.retrieval.exact_search import cosine_scores, normalise, top_k
from taxo_pipeline.retrieval.fusion import ScoreSource, fuse
from taxo_pipeline.retrieval.images import image_queries
from taxo_pipeline.retrieval.label_transfer import FOLDS, NEIGHBOURS, TEMPERATURE, assign_folds, transfer_labels
from taxo_pipeline.retrieval.queries import title_and_description_queries
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.sie.resource import SIEResource
from taxo_pipeline.warehouse import Warehouse

GROUP = "improved_retrieval"
QUERY_STAGE = "query_encode"
ZERO_SHOT = "zero-shot"
CROSS_VALIDATED = f"{FOLDS}-fold cv"


class ImprovedRetrievalConfig(dg.Config):
    top_k: int = Field(default=5, description="Candidates stored per product.")
    batch_size: int = Field(
        default=64, description="Texts per encode request (the reference reproduction keeps 8 for comparability)."
    )


@dataclass(frozen=True)
class Inputs:
    """Everything the approaches score from, for one model x variant partition."""

    model: str
    variant: str
    products: pl.DataFrame
    hierarchy: Hierarchy
    queries: np.ndarray  # unit-length title + description vectors, one per product
    text_scores: dict[str, np.ndarray]  # variant -> products x categories cosine similarities
    image_scores: ScoreSource | None  # only where this model has an image-retrieval partition
    query_requests: list[LatencyRecord]  # the encode requests that produced the query vectors
    metadata: dict[str, dg.MetadataValue]


def _has_predictions(warehouse: Warehouse, partition: Partition) -> bool:
    if not warehouse.table_exists(PREDICTIONS):
        return False
    with warehouse.connect(read_only=True) as con:
        (count,) = con.execute(
            f"SELECT count(*) FROM {PREDICTIONS} WHERE approach = ? AND model = ? AND variant = ?",
            list(partition.keys.values()),
        ).fetchone()
    return count > 0


def _image_scores(
    context: dg.AssetExecutionContext, storage: StorageResource, client: InferenceClient, model: str, variant: str,
    categories: np.ndarray, batch_size: int,
) -> ScoreSource | None:
    """Image-to-category scores for the products whose image decodes, when image retrieval ran for
    this model and variant (its vectors then come from the embedding cache)."""
    if not _has_predictions(storage.warehouse(), Partition(IMAGE_APPROACH, model, variant)):
        context.log.info(f"no {IMAGE_APPROACH} partition for {model} {variant}: fusing text scores only")
        return None
    products = load_experiment(storage, with_images=True)
    images = products[IMAGE].struct.field("bytes").to_list() if IMAGE in products.columns else [None] * products.height
    queries = image_queries(products["product_id"].to_list(), images)
    if not queries.images:
        context.log.info(f"{IMAGE_APPROACH} exists for {model} {variant} but no product image decodes: text only")
        return None
    vectors = client.encode(model, queries.images, is_query=True, batch_size=batch_size)
    scores = np.zeros((products.height, categories.shape[0]))
    present = np.isin(products["product_id"].to_numpy(), queries.product_ids)
    scores[present] = cosine_scores(vectors, categories)
    return ScoreSource("image", scores, weight=1.0, present=present)


def _inputs(
    context: dg.AssetExecutionContext, storage: StorageResource, sie: SIEResource, config: ImprovedRetrievalConfig,
    fuses: bool,
) -> Inputs:
    """Vectors and scores for the partition; with `fuses`, both variants' text scores and the image
    scores where they exist, else the partition variant's text scores only."""
    model, variant = partition_keys(context)
    products = load_experiment(storage)
    taxonomy = load_taxonomy_l3(storage)
    hierarchy = Hierarchy.from_paths(taxonomy.paths)
    texts = title_and_description_queries(products["product_title"].to_list(), products["product_description"].to_list())
    with sie.client(logger=context.log) as client:
        context.log.info(f"{model} {variant}: encoding {len(texts)} title + description queries")
        encoded = client.encode_detailed(model, texts, is_query=True, batch_size=config.batch_size)
        queries = normalise(encoded.vectors)
        categories = {
            name: client.encode(
                model, category_documents(taxonomy, name).documents, is_query=False, batch_size=config.batch_size
            )
            for name in (VARIANTS if fuses else (variant,))
        }
        image = (
            _image_scores(context, storage, client, model, variant, categories[variant], config.batch_size)
            if fuses else None
        )  # fmt: skip
        requests_made = client.request_count
    context.log.info(f"{model} {variant}: scoring {products.height} products against {len(hierarchy.paths)} categories")
    return Inputs(
        model=model,
        variant=variant,
        products=products,
        hierarchy=hierarchy,
        queries=queries,
        text_scores={name: cosine_scores(queries, vectors) for name, vectors in categories.items()},
        image_scores=image,
        query_requests=encoded.requests,
        metadata={
            "sie_requests": dg.MetadataValue.int(requests_made),
            "queries_from_embedding_cache": dg.MetadataValue.int(int(np.count_nonzero(encoded.from_cache))),
            "image_products_fused": dg.MetadataValue.int(int(image.mask().sum()) if image else 0),
        },
    )


# -- the approaches: each returns (products x categories scores, extra metadata) -------------------

Scored = tuple[np.ndarray, dict[str, dg.MetadataValue]]


def title_description_scores(inputs: Inputs) -> Scored:
    return inputs.text_scores[inputs.variant], {}


def fused_scores(inputs: Inputs) -> Scored:
    sources = [ScoreSource(f"text {name}", scores, weight=0.5) for name, scores in inputs.text_scores.items()]
    if inputs.image_scores is not None:
        sources.append(inputs.image_scores)
    return fuse(sources), {"fused_sources": dg.MetadataValue.text(", ".join(s.name for s in sources))}


def cascade_scores(inputs: Inputs) -> Scored:
    fused, metadata = fused_scores(inputs)
    aggregated = node_scores(fused, inputs.hierarchy)
    soft = path_scores(aggregated, inputs.hierarchy)
    hard = [inputs.hierarchy.paths[i] for i in hard_cascade(aggregated, inputs.hierarchy)]
    hard_result = evaluate_paths(hard, *_truths(inputs.products))
    soft_top = [inputs.hierarchy.paths[i] for i in np.argmax(soft, axis=1)]
    return soft, {
        **metadata,
        "hard_cascade_strict_hf1": dg.MetadataValue.float(hard_result["strict"]["hierarchical"]["f1"]),
        # products where keeping every branch open changed the L1 the hard cascade committed to
        "l1_differs_from_hard_cascade": dg.MetadataValue.int(
            sum(at_level(s, 1) != at_level(h, 1) for s, h in zip(soft_top, hard, strict=True))
        ),
    }


def label_transfer_scores(inputs: Inputs) -> Scored:
    cascade, metadata = cascade_scores(inputs)
    index = {path: i for i, path in enumerate(inputs.hierarchy.paths)}
    truths = inputs.products["ground_truth_category"].to_list()
    if unknown := [t for t in truths if t not in index]:
        raise RuntimeError(
            f"label transfer for {inputs.model} {inputs.variant}: {len(unknown)} ground-truth labels of "
            f"products_experiment_l3 are not L3 taxonomy nodes (first: {unknown[0]!r}); rematerialize the data assets"
        )
    folds = assign_folds(inputs.products["product_id"].to_list())
    result = transfer_labels(cascade, inputs.queries, [index[t] for t in truths], folds, inputs.hierarchy.paths)
    weights = pl.DataFrame(
        {
            "fold": list(result.weights),
            "products": [int(np.count_nonzero(folds == f)) for f in result.weights],
            "vote_weight": list(result.weights.values()),
        }
    )
    return result.scores, {
        **metadata,
        "evaluation": dg.MetadataValue.text(CROSS_VALIDATED),
        "neighbours": dg.MetadataValue.int(NEIGHBOURS),
        "temperature": dg.MetadataValue.float(TEMPERATURE),
        "vote_weight_per_fold": dg.MetadataValue.md(markdown_table(weights)),
    }


# -- shared wiring ------------------------------------------------------------------------------


def _truths(products: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    return products["ground_truth_category"].to_list(), products["potential_product_categories"].to_list()


def _comparison(warehouse: Warehouse, partition: Partition, result: dict) -> str:
    """Markdown: this approach next to the reference approach of the same model and variant."""
    reference = Partition(REFERENCE_APPROACH, partition.model, partition.variant)
    try:
        ref_metrics, _ = load_metrics(warehouse, reference)
    except LookupError:
        return f"no {REFERENCE_APPROACH} metrics for {partition.model} {partition.variant} yet"
    lines = ["| approach | strict hF1 | lenient hF1 |", "| --- | --- | --- |"]
    for name, block in ((REFERENCE_APPROACH, ref_metrics), (partition.approach, result)):
        lines.append(f"| {name} | {block['strict']['hierarchical']['f1']:.3f} | {block['lenient']['hierarchical']['f1']:.3f} |")
    base = ref_metrics["strict"]["hierarchical"]["f1"]
    if base:
        lines.append(f"\nstrict hF1 {100 * (result['strict']['hierarchical']['f1'] / base - 1):+.1f}% vs {REFERENCE_APPROACH}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Approach:
    name: str  # the `approach` value in predictions and metrics
    score: Callable[[Inputs], Scored]
    fuses: bool  # reads both variants (and image scores), not only the partition's variant
    evaluation: str = ZERO_SHOT


TITLE_DESCRIPTION = Approach("title-description", title_description_scores, fuses=False)
SCORE_FUSION = Approach("score-fusion", fused_scores, fuses=True)
HIERARCHICAL_CASCADE = Approach("hierarchical-cascade", cascade_scores, fuses=True)
LABEL_TRANSFER = Approach("label-transfer", label_transfer_scores, fuses=True, evaluation=CROSS_VALIDATED)


def classify_and_store(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sie: SIEResource,
    config: ImprovedRetrievalConfig,
    approach: Approach,
) -> dg.MaterializeResult:
    """Score every product, store its top-k, the query latencies and the metrics of its top-1
    under the approach's name, and describe the result against the reference."""
    inputs = _inputs(context, storage, sie, config, approach.fuses)
    scores, extra = approach.score(inputs)
    partition = Partition(approach.name, inputs.model, inputs.variant)
    ranked = top_k(scores, inputs.hierarchy.paths, config.top_k)
    warehouse = storage.warehouse()
    rows = save_predictions(warehouse, partition, inputs.products["product_id"].to_list(), ranked)
    save_latencies(warehouse, partition, QUERY_STAGE, inputs.query_requests)
    result = evaluate_paths([r[0][0] for r in ranked], *_truths(inputs.products))
    latency_block = latency(warehouse, partition, QUERY_STAGE)
    save_metrics(warehouse, partition, result, len(ranked), latency_block, evaluation=approach.evaluation)
    context.log.info(
        f"{approach.name} {inputs.model} {inputs.variant}: strict hF1 {result['strict']['hierarchical']['f1']:.3f} "
        f"on {len(ranked)} products ({approach.evaluation})"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows),
            **metrics_metadata(result, len(ranked), latency_block),
            "vs_reference": dg.MetadataValue.md(_comparison(warehouse, partition, result)),
            **hf1_chart_metadata(warehouse, partition.model),
            **inputs.metadata,
            **extra,
        }
    )


def _asset(*extra_deps):
    # After the reference's metrics when both run together, so the comparison table has them.
    return dg.asset(
        partitions_def=model_variant, group_name=GROUP, code_version="1",
        deps=[products_experiment_l3, category_embeddings, text_retrieval_metrics, *extra_deps],
    )  # fmt: skip


@_asset()
def title_description_retrieval(
    context: dg.AssetExecutionContext, config: ImprovedRetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """`title-description`: nearest category to the title + description query, among the partition
    variant's documents (exact cosine)."""
    return classify_and_store(context, storage, sie, config, TITLE_DESCRIPTION)


@_asset(image_retrieval_predictions)
def score_fusion_retrieval(
    context: dg.AssetExecutionContext, config: ImprovedRetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """`score-fusion`: title + description scores against full-path and leaf documents, standardised
    per product and averaged. The text side ignores the variant (both partitions fuse both); the
    variant picks the image-retrieval partition of the same model whose image scores join, with the
    text's weight, when it exists. Without it (text models, text-only data) the two partitions agree."""
    return classify_and_store(context, storage, sie, config, SCORE_FUSION)


@_asset(image_retrieval_predictions)
def hierarchical_cascade_retrieval(
    context: dg.AssetExecutionContext, config: ImprovedRetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """`hierarchical-cascade`: the score-fusion scores decoded through the taxonomy. A node's score is
    half its own, half its subtree's best; a path's score is the mean over its levels, and the best
    path wins (the hard greedy cascade's hF1 is in the metadata for comparison). Variant as in
    score-fusion."""
    return classify_and_store(context, storage, sie, config, HIERARCHICAL_CASCADE)


@_asset(image_retrieval_predictions)
def label_transfer_retrieval(
    context: dg.AssetExecutionContext, config: ImprovedRetrievalConfig, storage: StorageResource, sie: SIEResource
) -> dg.MaterializeResult:
    """`label-transfer`: the cascade's scores plus the category votes of the 10 most similar labelled
    products from the other folds of a 5-fold split by product-id hash (a product never votes for
    itself); the vote weight is chosen inside each training split. Variant as in score-fusion."""
    return classify_and_store(context, storage, sie, config, LABEL_TRANSFER)
