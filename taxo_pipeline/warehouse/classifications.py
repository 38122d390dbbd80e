"""The views over catalogue runs, whose rows stay in files (DuckDB's one-writer rule is kept: a run
writes Parquet shards, and the warehouse reads them at query time): `classifications` (every published
shard), `review_queue` on it, and `catalogue_learning` (what each catalogue's own labels taught).
classification/shards.py, review.py and catalogue_labels.py say where the files are and what they hold.
"""

from __future__ import annotations

import pyarrow as pa

from taxo_pipeline.warehouse.store import Warehouse

CLASSIFICATIONS = "classifications"
REVIEW_QUEUE = "review_queue"
LEARNING_VIEW = "catalogue_learning"
TAXONOMY = "taxonomy_trimmed"

REVIEW_QUEUE_SQL = f"""
    WITH parents AS (  -- taxonomy nodes that have a node below them
        SELECT DISTINCT array_to_string(list_slice(string_split(path, ' > '), 1, -2), ' > ') AS parent
        FROM {TAXONOMY} WHERE contains(path, ' > ')
    ), queued AS (
        SELECT c.*, coalesce(len(string_split(c.category, ' > ')), 0) AS levels, p.parent IS NOT NULL AS has_deeper,
               count(c.category) OVER (PARTITION BY c.catalogue, c.approach, c.model, c.reranker, c.variant, c.category)
                   AS category_products,
               list_filter(c.top_k, lambda t: starts_with(t.category, c.category || ' > '))[1] AS deeper
        FROM {CLASSIFICATIONS} c LEFT JOIN parents p ON p.parent = c.category
        WHERE c.needs_review
    )
    SELECT catalogue, approach, model, reranker, variant, product_id, category, confidence, levels,
           CASE WHEN category IS NULL THEN 'no prediction: ' || coalesce(skipped, 'not classified')
                WHEN has_deeper AND deeper IS NULL THEN
                    'stopped at L' || levels || ': no L' || (levels + 1) || ' category below it scored above it '
                    || printf('(%.3f); none is among its top ', score) || len(top_k) || ' candidates'
                WHEN has_deeper THEN
                    'stopped at L' || levels || ': no L' || (levels + 1) || ' category below it scored above it '
                    || printf('(%.3f); the best, %s, scored %.3f', score, deeper.category, deeper.score)
           END AS stop_reason,
           category_products, top_k, shard, classified_at
    FROM queued
    ORDER BY confidence ASC NULLS FIRST, category_products DESC, catalogue, product_id
"""


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def refresh_classifications(warehouse: Warehouse, shards: str | None, current: str, columns: pa.Table) -> None:
    """`classifications`: the rows of the shard files matching the glob `shards` that sit in the snapshot
    folder named by the JSON file (its `snapshot` field) of their run folder, matched by the glob `current`,
    read at query time; with `shards` None (nothing published yet), no rows, with `columns`' columns (an
    empty shard table), so the view and `review_queue` on it exist from the first materialization."""
    with warehouse.transaction() as con:
        if shards is None:
            con.register("_shard_columns", columns)
            try:
                described = con.execute("DESCRIBE SELECT * FROM _shard_columns").fetchall()
            finally:
                con.unregister("_shard_columns")
            query = "SELECT " + ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind, *_ in described) + " WHERE false"
        else:
            query = f"""SELECT * EXCLUDE (filename)
                        FROM read_parquet({_quoted(shards)}, union_by_name = true, filename = true)
                        WHERE parse_dirpath(filename) IN (SELECT parse_dirpath(filename) || '/' || snapshot
                                                          FROM read_json({_quoted(current)}, filename = true,
                                                                         columns = {{snapshot: 'VARCHAR'}}))"""
        con.execute(f"CREATE OR REPLACE VIEW {CLASSIFICATIONS} AS {query}")


def refresh_review_queue(warehouse: Warehouse) -> None:
    """(Re)create `review_queue` once the classifications view and the taxonomy exist."""
    if warehouse.table_exists(CLASSIFICATIONS) and warehouse.table_exists(TAXONOMY):
        with warehouse.transaction() as con:
            con.execute(f"CREATE OR REPLACE VIEW {REVIEW_QUEUE} AS {REVIEW_QUEUE_SQL}")


# The columns of a catalogue_learning JSON file (classification/catalogue_labels.py writes them).
_LEARNED_COLUMNS = {
    "catalogue": "VARCHAR", "approach": "VARCHAR", "model": "VARCHAR", "reranker": "VARCHAR", "variant": "VARCHAR",
    "products": "VARCHAR", "target_precision": "DOUBLE", "review_threshold": "DOUBLE", "labelled": "BIGINT",
    "unrecognised_labels": "STRUCT(label VARCHAR, products BIGINT)[]",
    "coverage": "STRUCT(threshold DOUBLE, products BIGINT, coverage DOUBLE, precision_l1 DOUBLE, precision_l2 DOUBLE, "
                "precision_exact DOUBLE)[]",
    "figures": "STRUCT(labelled BIGINT, exact_accuracy DOUBLE, l1_accuracy DOUBLE, ece DOUBLE, max_decile_gap DOUBLE, "
               "vote_weight DOUBLE, prior_weight DOUBLE, pool_scale DOUBLE, calibration VARCHAR)",
}  # fmt: skip


def refresh_learning_view(warehouse: Warehouse, files: str) -> None:
    """`catalogue_learning` over the JSON files matching the glob `files`, read at query time (DuckDB
    fails to create it while none matches)."""
    columns = ", ".join(f"{name}: '{kind}'" for name, kind in _LEARNED_COLUMNS.items())
    figures = ", ".join(f"figures.{f} AS {f}" for f in ("exact_accuracy", "l1_accuracy", "ece", "max_decile_gap",
                                                          "vote_weight", "prior_weight", "pool_scale", "calibration"))  # fmt: skip
    with warehouse.transaction() as con:
        con.execute(f"""CREATE OR REPLACE VIEW {LEARNING_VIEW} AS
                        SELECT catalogue, approach, model, reranker, variant, products, labelled, {figures},
                               target_precision, review_threshold, coverage, unrecognised_labels
                        FROM read_json({_quoted(files)}, columns = {{{columns}}})
                        ORDER BY catalogue, approach, model, variant""")
