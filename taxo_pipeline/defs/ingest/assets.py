"""Data assets: raw sources -> clean full-depth table -> L3 taxonomy and experiment table, and the
full-depth taxonomy the full-depth category documents are made of.

TAXO_DEPTH sets the depth `taxonomy_trimmed` and `products_experiment` trim to. The asset keys stay (their
lineage and the automation's cursors survive a switch); the depth is in their metadata, their code version
(so the automation reruns them, and then everything downstream, when it changes) and their file names.

Thin wiring: the rules live in taxo_pipeline.dataset. Each table is written to data/ as the
seed's Parquet file and to the warehouse, and only after everything it needs has been read
and validated, so bad input leaves both as they were.
"""

from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from taxo_pipeline import settings
from taxo_pipeline.classification.review import refresh_catalogue_views
from taxo_pipeline.dataset.cleaning import clean_products
from taxo_pipeline.dataset.fetch import cache_name_for, resolve_source
from taxo_pipeline.dataset.products import IMAGE, read_products
from taxo_pipeline.dataset.tables import load_trimmed_taxonomy
from taxo_pipeline.dataset.taxonomy import (
    MAX_LEVEL,
    Depth,
    TrimmedTaxonomy,
    depth_label,
    level_counts,
    parse_categories,
    taxonomy_table,
)
from taxo_pipeline.dataset.trimming import trim_products
from taxo_pipeline.defs.automation import AUTOMATION
from taxo_pipeline.defs.location import location_workspace
from taxo_pipeline.defs.metadata import table_metadata
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline.files import file_sha256, write_parquet_atomic

GROUP = "dataset"
# Definition metadata naming the source ("products" or "taxonomy") a raw asset reads, so the main job
# can tell from the asset graph which assets to rerun when a source file changes.
SOURCE_METADATA = "taxo/source"


class SourceConfig(dg.Config):
    source: str | None = Field(
        default=None, description="Local path or URL. Unset: the env var, else the reference's source."
    )
    refresh: bool = Field(default=False, description="Download again even when data/ holds a cached copy.")


# what (the Settings field of its source) -> (env var, the reference's URL, the seed's cache file name)
_SOURCES = {
    "products": ("TAXO_PRODUCTS", settings.PRODUCTS_URL, settings.RAW_PRODUCTS_FILE),
    "taxonomy": ("TAXO_TAXONOMY", settings.TAXONOMY_URL, settings.RAW_TAXONOMY_FILE),
}


def code_version_at(version: str, depth: Depth) -> str:
    """An asset's code version at `depth`: `version` itself at depth 3 (what existing instances recorded),
    `version+depth-full` etc. otherwise."""
    return version if depth == MAX_LEVEL else f"{version}+depth-{depth_label(depth)}"


def depth_code_version(version: str) -> str:
    """The code version at the code location's depth (TAXO_DEPTH when the definitions loaded)."""
    return code_version_at(version, location_workspace().depth)


def source_file(storage: WorkspaceResource, what: str, source: str | None = None, refresh: bool = False) -> tuple[str, Path]:
    """The `what` ("products" or "taxonomy") source, `source` else its env var else the reference's,
    and its local path (a URL is downloaded into data/ once)."""
    env_var, default_url, default_name = _SOURCES[what]
    workspace = storage.workspace()
    source = source or getattr(workspace.settings, what)
    path = resolve_source(
        source,
        what=what,
        env_var=env_var,
        cache_dir=workspace.data_dir,
        cache_name=cache_name_for(source, default_url, default_name),
        refresh=refresh,
    )
    return source, path


def source_data_version(path: Path) -> dg.DataVersion:
    """A source file's data version: its content, so the same file is the same data wherever it lies."""
    return dg.DataVersion(file_sha256(path))


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"parquet", "duckdb"},
    automation_condition=AUTOMATION,
    metadata={SOURCE_METADATA: "products"},
)
def raw_products(context: dg.AssetExecutionContext, config: SourceConfig, storage: WorkspaceResource) -> dg.Output[str]:
    """The raw product file (Parquet, JSON Lines or CSV), validated; its local path flows downstream."""
    source, path = source_file(storage, "products", config.source, config.refresh)
    frame = read_products(path)
    context.log.info("products: %d rows from %s", frame.height, path)
    return dg.Output(
        str(path),
        data_version=source_data_version(path),
        metadata={
            "source": source,
            "local_path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": frame.height,
            "columns": ", ".join(frame.columns),
            "has_images": IMAGE in frame.columns,
        },
    )


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"parquet", "duckdb"},
    automation_condition=AUTOMATION,
    metadata={SOURCE_METADATA: "taxonomy"},
)
def raw_taxonomy(context: dg.AssetExecutionContext, config: SourceConfig, storage: WorkspaceResource) -> dg.Output[str]:
    """Shopify's categories.txt, validated; its local path flows downstream."""
    source, path = source_file(storage, "taxonomy", config.source, config.refresh)
    categories = parse_categories(path)
    context.log.info("taxonomy: %d categories from %s", len(categories), path)
    return dg.Output(
        str(path),
        data_version=source_data_version(path),
        metadata={"source": source, "local_path": dg.MetadataValue.path(str(path)), "categories": len(categories)},
    )


def _warehouse_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Image bytes stay in the Parquet file; the warehouse gets a has_image flag instead."""
    if IMAGE not in frame.columns:
        return frame.with_columns(pl.lit(False).alias("has_image"))
    return frame.with_columns(pl.col(IMAGE).is_not_null().alias("has_image")).drop(IMAGE)


def _write(storage: WorkspaceResource, table: str, file_name: str, frame: pl.DataFrame) -> Path:
    """Warehouse first (one transaction), then the Parquet file (atomic rename)."""
    storage.warehouse().replace_table(table, _warehouse_frame(frame).to_arrow())
    path = storage.data_path(file_name)
    write_parquet_atomic(frame.to_arrow(), path)
    return path


@dg.asset(group_name=GROUP, code_version="1", kinds={"parquet", "duckdb"}, automation_condition=AUTOMATION)
def clean_products_full_depth(
    context: dg.AssetExecutionContext, storage: WorkspaceResource, raw_products: str, raw_taxonomy: str
) -> dg.MaterializeResult:
    """Products with every required field and labels that are valid taxonomy categories."""
    clean, report = clean_products(read_products(Path(raw_products)), parse_categories(Path(raw_taxonomy)))
    dropped = sum(report.dropped.values())
    context.log.info("cleaning: %d rows in, %d dropped %s, %d out", report.rows_in, dropped, report.dropped, report.rows_out)
    if clean.height == 0:  # nothing to evaluate: fail before the previous tables are replaced
        raise InputError(f"products file {raw_products}: no row is left after cleaning (dropped: {report.dropped})")
    path = _write(storage, "clean_products_full_depth", settings.CLEAN_FULL_DEPTH_FILE, clean)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(_warehouse_frame(clean)),
            "rows_in": report.rows_in,
            "rows_dropped": dropped,
            **{f"dropped_{reason}": n for reason, n in report.dropped.items()},
            "rows_out": report.rows_out,
            "local_path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    group_name=GROUP, code_version=depth_code_version("1"), kinds={"parquet", "duckdb"}, automation_condition=AUTOMATION
)
def taxonomy_trimmed(context: dg.AssetExecutionContext, storage: WorkspaceResource, raw_taxonomy: str) -> dg.MaterializeResult:
    """Every taxonomy node trimmed to TAXO_DEPTH levels (3 by default: L1, L2 and L3 nodes), sorted and unique."""
    workspace = storage.workspace()
    taxonomy = TrimmedTaxonomy.from_categories(parse_categories(Path(raw_taxonomy)), workspace.depth)
    frame = pl.from_arrow(taxonomy.to_arrow())
    path = _write(storage, "taxonomy_trimmed", workspace.taxonomy_path.name, frame)
    # review_queue reads this table: with it, the catalogue views exist (no rows before classify-products)
    refresh_catalogue_views(workspace.warehouse, workspace.data_dir)
    counts = taxonomy.level_counts()
    context.log.info("%s: %s nodes by level, %d in all", taxonomy.name, counts, len(taxonomy.paths))
    return dg.MaterializeResult(
        metadata={
            **table_metadata(frame),
            "depth": depth_label(taxonomy.depth),
            **{f"l{level}_nodes": n for level, n in sorted(counts.items())},
            "total_nodes": len(taxonomy.paths),
            "local_path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(group_name=GROUP, code_version="1", kinds={"parquet", "duckdb"}, automation_condition=AUTOMATION)
def taxonomy_full_depth(
    context: dg.AssetExecutionContext, storage: WorkspaceResource, raw_taxonomy: str
) -> dg.MaterializeResult:
    """Every category of the taxonomy at its full depth (Shopify's: down to L8), sorted and unique: the
    full-depth category documents, which score each L1-L3 node by the best of its subtree."""
    categories = sorted(set(parse_categories(Path(raw_taxonomy))))
    frame = pl.from_arrow(taxonomy_table(categories))
    path = _write(storage, "taxonomy_full_depth", settings.TAXONOMY_FULL_DEPTH_FILE, frame)
    counts = level_counts(categories)
    context.log.info("full-depth taxonomy: %s nodes by level, %d in all", counts, len(categories))
    return dg.MaterializeResult(
        metadata={
            **table_metadata(frame),
            **{f"l{level}_nodes": n for level, n in sorted(counts.items())},
            "total_nodes": len(categories),
            "local_path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    group_name=GROUP, code_version=depth_code_version("1"), deps=[clean_products_full_depth, taxonomy_trimmed],
    kinds={"parquet", "duckdb"}, automation_condition=AUTOMATION,
)
def products_experiment(context: dg.AssetExecutionContext, storage: WorkspaceResource) -> dg.MaterializeResult:
    """The evaluation table: ground truth and potentials trimmed to TAXO_DEPTH levels (3 by default)."""
    clean = pl.read_parquet(storage.data_path(settings.CLEAN_FULL_DEPTH_FILE))
    taxonomy = load_trimmed_taxonomy(storage.workspace())
    experiment = trim_products(clean, taxonomy)
    path = _write(storage, "products_experiment", settings.experiment_file(taxonomy.depth), experiment)
    by_l1 = experiment.group_by(pl.col("ground_truth_category").str.split(" > ").list.first().alias("l1")).len()
    context.log.info("experiment table: %d products", experiment.height)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(_warehouse_frame(experiment)),
            "depth": depth_label(taxonomy.depth),
            "products": experiment.height,
            "l1_labels_present": by_l1.height,
            "local_path": dg.MetadataValue.path(str(path)),
        }
    )
