"""Embeddings already computed, kept in the warehouse so SIE never encodes the same input twice.

Rows are keyed by (model, the model's fingerprint, is_query, sha256 of the input's bytes: UTF-8 text
or image file), and remember the request that produced them (id, batch size, latency), so latency
figures survive runs served from the cache. The fingerprint (catalogue entry and weight files, see
`catalogue.fingerprint`) makes a model whose weights or config changed miss the cache, and its older
vectors are deleted when the new ones are stored. A model that is not in the catalogue (one only a
remote server knows) has the empty fingerprint: its vectors are keyed by the model id alone.
Each lookup and write is one short connection, since DuckDB lets one process write at a time. The table
has a file of its own beside the warehouse (`Warehouse.cache`), which is never published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint, load_catalogue
from taxo_pipeline.warehouse import Warehouse, vector_column

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


def input_sha256(value: str | bytes) -> str:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


class EmbeddingCache:
    """The warehouse cache, keyed by the fingerprints of `catalogue` (default: the active catalogue).
    `read_only`: look vectors up but never write, for catalogue runs, whose query vectors are used once
    and which must not take the warehouse's one writer lock (concurrent shards, other machines)."""

    def __init__(self, warehouse: Warehouse, catalogue: Catalogue | None = None, read_only: bool = False):
        self.warehouse = warehouse
        self.catalogue = load_catalogue() if catalogue is None else catalogue
        self.read_only = read_only
        self._fingerprints: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache({self.warehouse.path})"

    def fingerprint(self, model: str) -> str:
        """The model's fingerprint in the catalogue, or UNKNOWN_FINGERPRINT for a model outside it."""
        if model not in self._fingerprints:
            known = {spec.id: spec for spec in self.catalogue}
            self._fingerprints[model] = fingerprint(known[model]) if model in known else UNKNOWN_FINGERPRINT
        return self._fingerprints[model]

    def lookup(self, model: str, is_query: bool, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, LatencyRecord]]:
        """The cached vectors among `hashes` with the request that produced each, in one query."""
        if not hashes:
            return {}
        store = self.warehouse.embedding_store()
        if not store.exists():
            return {}
        if self.read_only and not store.table_exists(TABLE):
            return {}
        keys = pa.table({"input_sha256": pa.array(sorted(set(hashes)), pa.string())})
        # a writer looks up in a transaction: ensure_table may migrate
        connection = store.connect(read_only=True) if self.read_only else store.transaction()
        with connection as con:
            if not self.read_only:
                ensure_table(con)
            con.register("_keys", keys)
            found = con.sql(
                f"SELECT c.input_sha256, c.dim, c.vector, c.request_id, c.batch_size, c.latency_ms "
                f"FROM {TABLE} c JOIN _keys USING (input_sha256) "
                "WHERE c.model = ? AND c.fingerprint = ? AND c.is_query = ?",
                params=[model, self.fingerprint(model), is_query],
            ).to_arrow_table()
        if found.num_rows == 0:
            return {}
        dim = found["dim"][0].as_py()
        flat = found["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = flat.reshape(found.num_rows, dim)
        requests = [
            LatencyRecord("encode", model, size, latency, request_id)
            for request_id, size, latency in zip(
                found["request_id"].to_pylist(), found["batch_size"].to_pylist(), found["latency_ms"].to_pylist()
            )
        ]
        return dict(zip(found["input_sha256"].to_pylist(), zip(vectors, requests)))

    def store(
        self,
        model: str,
        is_query: bool,
        hashes: Sequence[str],
        vectors: np.ndarray,
        requests: Sequence[LatencyRecord],
        replace: bool = False,
    ) -> int:
        """Insert vectors (row i produced by requests[i]) in one transaction, and delete the model's
        vectors of any other fingerprint. Rows another process added meanwhile are kept, unless
        `replace` (a deliberate re-encode) overwrites them. Returns how many old vectors were deleted."""
        if len(hashes) == 0 or self.read_only:
            return 0
        vectors = np.asarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        current = self.fingerprint(model)
        rows = pa.table(
            {
                "model": pa.array([model] * n, pa.string()),
                "fingerprint": pa.array([current] * n, pa.string()),
                "is_query": pa.array([is_query] * n, pa.bool_()),
                "input_sha256": pa.array(list(hashes), pa.string()),
                "dim": pa.array([dim] * n, pa.int32()),
                "vector": vector_column(vectors),
                "request_id": pa.array([r.request_id for r in requests], pa.string()),
                "batch_size": pa.array([r.batch_size for r in requests], pa.int32()),
                "latency_ms": pa.array([r.latency_ms for r in requests], pa.float64()),
            }
        )
        with self.warehouse.embedding_store().transaction() as con:
            ensure_table(con)
            (pruned,) = con.execute(
                f"DELETE FROM {TABLE} WHERE model = ? AND fingerprint <> ?", [model, current]
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
