"""Asset checks on the data tables, run in SQL against the warehouse (warehouse/data_tables.py). They
block: a failure stops the run before anything downstream (predictions, metrics) is written, and the
automation waits for a fix."""

import dagster as dg

from taxo_pipeline.defs.ingest.assets import (
    clean_products_full_depth,
    products_experiment,
    taxonomy_full_depth,
    taxonomy_trimmed,
)
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.warehouse.data_tables import labels_outside_taxonomy, repeated_product_ids, row_count

SHOWN = 10  # offending values named in a failed check


def _result(offending: list[str], what: str) -> dg.AssetCheckResult:
    shown = ", ".join(map(repr, offending[:SHOWN])) + (" ..." if len(offending) > SHOWN else "")
    return dg.AssetCheckResult(
        passed=not offending,
        metadata={what: len(offending), "examples": shown or "none"},
        description=f"{len(offending)} {what}: {shown}" if offending else None,
    )


def _non_empty_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="has_rows", description=f"{table} holds at least one row.", blocking=True)
    def check(storage: WorkspaceResource) -> dg.AssetCheckResult:
        rows = row_count(storage.warehouse(), table)
        return dg.AssetCheckResult(passed=rows > 0, metadata={"rows": rows})

    return check


def _unique_ids_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="unique_product_ids", description=f"product_id is unique in {table}.", blocking=True)
    def check(storage: WorkspaceResource) -> dg.AssetCheckResult:
        repeated = repeated_product_ids(storage.warehouse(), table)
        return _result(repeated, "duplicate_ids")

    return check


@dg.asset_check(
    asset=products_experiment, blocking=True,
    description="Every ground truth and potential is a node of taxonomy_trimmed (L3 by default; the taxonomy at TAXO_DEPTH).",
)
def labels_in_taxonomy(storage: WorkspaceResource) -> dg.AssetCheckResult:
    unknown = labels_outside_taxonomy(storage.warehouse())
    return _result(unknown, "unknown_labels")


checks = [
    labels_in_taxonomy,
    _non_empty_check(clean_products_full_depth, "clean_products_full_depth"),
    _non_empty_check(taxonomy_trimmed, "taxonomy_trimmed"),
    _non_empty_check(taxonomy_full_depth, "taxonomy_full_depth"),
    _non_empty_check(products_experiment, "products_experiment"),
    _unique_ids_check(clean_products_full_depth, "clean_products_full_depth"),
    _unique_ids_check(products_experiment, "products_experiment"),
]
