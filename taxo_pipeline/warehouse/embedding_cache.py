"""The embedding cache's table, in a file of its own beside the warehouse (`Warehouse.cache`) that is
never published: every vector SIE returned, keyed by (model, the model's fingerprint, is_query, sha256
of the input), with the request that produced it. sie/embedding_cache.py decides what is cached and
for which fingerprint; this is its SQL. Each lookup and write is one short connection, since DuckDB
lets one process write at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from taxo_pipeline.warehouse.store import Warehouse

TABLE = "embedding_cache"
# Rows written before fingerprints existed, migrated: valid only for models outside the catalogue.
UNKNOWN_FINGERPRINT = ""
_COLUMNS = """
    model VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    is_query BOOLEAN NOT NULL,
    input_sha256 VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL,
    request_id VARCHAR NOT NULL,
    batch_size INTEGER NOT NULL,
    latency_ms DOUBLE NOT NULL,
    PRIMARY KEY (model, fingerprint, is_query, input_sha256)
"""


def lookup(
    warehouse: Warehouse, model: str, fingerprint: str, is_query: bool, hashes: Sequence[str], read_only: bool
) -> pa.Table | None:
    """The cached rows among `hashes` (input_sha256, dim, vector, request_id, batch_size, latency_ms), in
    one query; None when there is no cache yet. `read_only`: never take the cache file's writer lock."""
    store = warehouse.embedding_store()
    if not store.exists() or (read_only and not store.table_exists(TABLE)):
        return None
    keys = pa.table({"input_sha256": pa.array(sorted(set(hashes)), pa.string())})
    # a writer looks up in a transaction: ensure_table may migrate
    connection = store.connect(read_only=True) if read_only else store.transaction()
    with connection as con:
        if not read_only:
            ensure_table(con)
        con.register("_keys", keys)
        return con.sql(
            f"SELECT c.input_sha256, c.dim, c.vector, c.request_id, c.batch_size, c.latency_ms "
            f"FROM {TABLE} c JOIN _keys USING (input_sha256) "
            "WHERE c.model = ? AND c.fingerprint = ? AND c.is_query = ?",
            params=[model, fingerprint, is_query],
        ).to_arrow_table()


def insert(warehouse: Warehouse, rows: pa.Table, model: str, fingerprint: str, replace: bool) -> int:
    """Insert `rows` (the table's columns) in one transaction, and delete the model's vectors of any
    fingerprint but `fingerprint`. Rows another process added meanwhile are kept, unless `replace`
    overwrites them. Returns how many old vectors were deleted."""
    with warehouse.embedding_store().transaction() as con:
        ensure_table(con)
        (pruned,) = con.execute(
            f"DELETE FROM {TABLE} WHERE model = ? AND fingerprint <> ?", [model, fingerprint]
        ).fetchone()
        con.register("_rows", rows)
        con.execute(f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO {TABLE} BY NAME SELECT * FROM _rows")
    return pruned


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table, or migrate one from before fingerprints (its rows get UNKNOWN_FINGERPRINT)."""
    columns = {row[0] for row in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [TABLE]
    ).fetchall()}  # fmt: skip
    if not columns:
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")
    elif "fingerprint" not in columns:
        # The primary key changes, which DuckDB cannot ALTER: copy into a new table.
        con.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_before_fingerprints")
        con.execute(f"CREATE TABLE {TABLE} ({_COLUMNS})")
        con.execute(
            f"INSERT INTO {TABLE} BY NAME SELECT *, ? AS fingerprint FROM {TABLE}_before_fingerprints",
            [UNKNOWN_FINGERPRINT],
        )
        con.execute(f"DROP TABLE {TABLE}_before_fingerprints")
