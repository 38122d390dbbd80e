"""Per-model category embeddings: encoded once (is_query=False), stored in the warehouse and in a
Chroma collection per model x variant, which text and image retrieval both query. The full-depth
variant holds a document per node of the full taxonomy (14,606 for Shopify's), the others one per
node of the taxonomy at TAXO_DEPTH (L1-L3 by default). Each depth has its own Chroma directory and
its own rows, so switching the depth back and forth rebuilds nothing that is still current."""

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from taxo_pipeline.approaches.evidence import CATEGORY_STAGE
from taxo_pipeline.approaches.spec import MODEL_VARIANT
from taxo_pipeline.dataset.tables import load_taxonomy_full_depth, load_trimmed_taxonomy
from taxo_pipeline.dataset.taxonomy import depth_label
from taxo_pipeline.defs.automation import AUTOMATION
from taxo_pipeline.defs.ingest.assets import (
    depth_code_version,
    taxonomy_full_depth,
    taxonomy_trimmed,
)
from taxo_pipeline.defs.models.fingerprints import encoder_model_fingerprint
from taxo_pipeline.defs.models.partitions import MODEL_DIMENSION, model_variant, partition_models
from taxo_pipeline.defs.resources import SIEResource, WorkspaceResource
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.store import latency_rows
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.retrieval.variants import variant_documents
from taxo_pipeline.sie.model_catalogue import model_slug
from taxo_pipeline.warehouse.results import DEPTH, LATENCIES
from taxo_pipeline.warehouse.store import vector_column

GROUP = "category_index"
TABLE = "category_embeddings"
INDEX_APPROACH = "category-index"  # its request latencies sit beside the approaches'


class CategoryEmbeddingsConfig(dg.Config):
    # The reference sent 8 per request; the reported latencies are the queries', so documents go in
    # requests of 64: a third less time for the index on CPU (bench/benchmark.py).
    batch_size: int = Field(default=64, description="Categories per encode request (the reference used 8).")
    rebuild: bool = Field(default=False, description="Re-encode through SIE (not the cache) and rebuild the index.")


@dg.asset(
    partitions_def=model_variant,
    group_name=GROUP,
    deps=[taxonomy_trimmed, taxonomy_full_depth, dg.AssetDep(encoder_model_fingerprint, partition_mapping=MODEL_DIMENSION)],
    code_version=depth_code_version("1"),
    kinds={"sie", "duckdb", "chroma"},
    automation_condition=AUTOMATION,
)
def category_embeddings(
    context: dg.AssetExecutionContext, config: CategoryEmbeddingsConfig, storage: WorkspaceResource, sie: SIEResource
) -> dg.MaterializeResult:
    """The variant's category documents encoded: every node's full path or leaf name (the taxonomy at
    TAXO_DEPTH), or every node of the full taxonomy's full path (full-depth)."""
    models = partition_models(MODEL_VARIANT, context.partition_key)
    model, variant = models.model, models.variant
    workspace = storage.workspace()
    taxonomy = load_trimmed_taxonomy(workspace)
    depth = depth_label(taxonomy.depth)
    categories = variant_documents(taxonomy, variant, load_taxonomy_full_depth(workspace, variant))
    with sie.client(logger=context.log) as client:
        encoded = client.encode_detailed(
            model, categories.documents, is_query=False, batch_size=config.batch_size, refresh=config.rebuild
        )
        requests_made = client.request_count
    vectors = encoded.vectors
    rows = pa.table(
        {
            "model": [model] * len(categories.ids),
            "variant": [variant] * len(categories.ids),
            "path": categories.ids,
            "level": pa.array(categories.levels, pa.int32()),
            "document": categories.documents,
            "vector": vector_column(vectors),
            DEPTH: [depth] * len(categories.ids),
        }
    )
    warehouse = storage.warehouse()
    warehouse.replace_partition(TABLE, {"model": model, "variant": variant, DEPTH: depth}, rows)
    key = ResultKey(INDEX_APPROACH, model, variant)
    warehouse.replace_partition(LATENCIES, key.columns, latency_rows(key, {CATEGORY_STAGE: encoded.requests}))
    index = CategoryIndex(storage.index_path(), model_slug(model), variant, taxonomy.depth)
    rebuilt = index.sync(categories, vectors, force=config.rebuild)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(categories.ids),
            "depth": depth,
            "dim": int(vectors.shape[1]),
            "from_embedding_cache": int(np.count_nonzero(encoded.from_cache)),
            "sie_requests": requests_made,
            "chroma_collection": index.name,
            "chroma_rebuilt": rebuilt,
            "chroma_dir": dg.MetadataValue.path(str(index.directory)),
        }
    )
