"""Asset checks on the data tables, run in SQL against the warehouse. They block: a failure stops the
run before anything downstream (predictions, metrics) is written, and the automation waits for a fix."""

import dagster as dg

from taxo_pipeline.defs.ingest.assets import (
    clean_products_full_depth,
    products_experiment,
    taxonomy_full_depth,
    taxonomy_trimmed,
)
from taxo_pipeline.defs.resources import WorkspaceResource

SHOWN = 10  # offending values named in a failed check


def _scalar(storage: WorkspaceResource, sql: str) -> int:
    with storage.warehouse().connect(read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def _values(storage: WorkspaceResource, sql: str) -> list[str]:
    with storage.warehouse().connect(read_only=True) as con:
        return [value for (value,) in con.execute(sql).fetchall()]


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
        rows = _scalar(storage, f'SELECT count(*) FROM "{table}"')
        return dg.AssetCheckResult(passed=rows > 0, metadata={"rows": rows})

    return check


def _unique_ids_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="unique_product_ids", description=f"product_id is unique in {table}.", blocking=True)
    def check(storage: WorkspaceResource) -> dg.AssetCheckResult:
        repeated = _values(storage, f'SELECT product_id FROM "{table}" GROUP BY product_id HAVING count(*) > 1 ORDER BY 1')
        return _result(repeated, "duplicate_ids")

    return check


@dg.asset_check(
    asset=products_experiment, blocking=True,
    description="Every ground truth and potential is a node of taxonomy_trimmed (L3 by default; the taxonomy at TAXO_DEPTH).",
)
def labels_in_taxonomy(storage: WorkspaceResource) -> dg.AssetCheckResult:
    unknown = _values(
        storage,
        """
        WITH labels AS (
            SELECT ground_truth_category AS label FROM products_experiment
            UNION ALL
            SELECT unnest(potential_product_categories) FROM products_experiment
        )
        SELECT DISTINCT label FROM labels WHERE label NOT IN (SELECT path FROM taxonomy_trimmed) ORDER BY 1
        """,
    )
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
