"""Asset checks on the data tables, run in SQL against the warehouse."""


import dagster as dg

from taxo_pipeline.defs.ingest.assets import clean_products_full_depth, products_experiment_l3, taxonomy_l3
from taxo_pipeline.resources import StorageResource


def _scalar(storage: StorageResource, sql: str) -> int:
    with storage.warehouse().connect(read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def _non_empty_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="has_rows", description=f"{table} holds at least one row.")
    def check(storage: StorageResource) -> dg.AssetCheckResult:
        rows = _scalar(storage, f'SELECT count(*) FROM "{table}"')
        return dg.AssetCheckResult(passed=rows > 0, metadata={"rows": rows})

    return check


def _unique_ids_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="unique_product_ids", description=f"product_id is unique in {table}.")
    def check(storage: StorageResource) -> dg.AssetCheckResult:
        duplicates = _scalar(storage, f'SELECT count(*) - count(DISTINCT product_id) FROM "{table}"')
        return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": duplicates})

    return check


@dg.asset_check(asset=products_experiment_l3, description="Every ground truth and potential is an L3 taxonomy node.")
def labels_in_taxonomy(storage: StorageResource) -> dg.AssetCheckResult:
    unknown = _scalar(
        storage,
        """
        WITH labels AS (
            SELECT ground_truth_category AS label FROM products_experiment_l3
            UNION ALL
            SELECT unnest(potential_product_categories) FROM products_experiment_l3
        )
        SELECT count(*) FROM labels WHERE label NOT IN (SELECT path FROM taxonomy_l3)
        """,
    )
    return dg.AssetCheckResult(passed=unknown == 0, metadata={"unknown_labels": unknown})


checks = [
    labels_in_taxonomy,
    _non_empty_check(clean_products_full_depth, "clean_products_full_depth"),
    _non_empty_check(taxonomy_l3, "taxonomy_l3"),
    _non_empty_check(products_experiment_l3, "products_experiment_l3"),
    _unique_ids_check(clean_products_full_depth, "clean_products_full_depth"),
    _unique_ids_check(products_experiment_l3, "products_experiment_l3"),
]
