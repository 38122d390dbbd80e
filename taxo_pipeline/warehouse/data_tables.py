"""What the data assets' checks ask of the tables they wrote (products and taxonomies), in SQL."""

from __future__ import annotations

from taxo_pipeline.warehouse.store import Warehouse


def row_count(warehouse: Warehouse, table: str) -> int:
    with warehouse.connect(read_only=True) as con:
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def repeated_product_ids(warehouse: Warehouse, table: str) -> list[str]:
    """The product ids that appear more than once in `table`, sorted."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(f'SELECT product_id FROM "{table}" GROUP BY product_id HAVING count(*) > 1 ORDER BY 1')
        return [value for (value,) in rows.fetchall()]


def labels_outside_taxonomy(warehouse: Warehouse) -> list[str]:
    """The ground truths and potentials of products_experiment that are not nodes of taxonomy_trimmed, sorted."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute("""
            WITH labels AS (
                SELECT ground_truth_category AS label FROM products_experiment
                UNION ALL
                SELECT unnest(potential_product_categories) FROM products_experiment
            )
            SELECT DISTINCT label FROM labels WHERE label NOT IN (SELECT path FROM taxonomy_trimmed) ORDER BY 1
        """)
        return [value for (value,) in rows.fetchall()]
