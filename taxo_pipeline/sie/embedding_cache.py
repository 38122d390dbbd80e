"""Embeddings already computed, kept in the warehouse so SIE never encodes the same input twice.

Rows are keyed by (model, is_query, sha256 of the input's bytes: UTF-8 text or image file), and
remember the request that produced them (id, batch size, latency), so latency figures survive
runs served from the cache. Each lookup and write is one short connection, since DuckDB lets one
process write at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.warehouse import Warehouse, vector_column

TABLE = "embedding_cache"
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model VARCHAR NOT NULL,
    is_query BOOLEAN NOT NULL,
    input_sha256 VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL,
    request_id VARCHAR NOT NULL,
    batch_size INTEGER NOT NULL,
    latency_ms DOUBLE NOT NULL,
    PRIMARY KEY (model, is_query, input_sha256)
)
"""


def input_sha256(value: str | bytes) -> str:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


class EmbeddingCache:
    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse

    def __repr__(self) -> str:
        return f"EmbeddingCache({self.warehouse.path})"

    def lookup(self, model: str, is_query: bool, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, LatencyRecord]]:
        """The cached vectors among `hashes` with the request that produced each, in one query."""
        if not hashes or not self.warehouse.path.exists():
            return {}
        keys = pa.table({"input_sha256": pa.array(sorted(set(hashes)), pa.string())})
        with self.warehouse.connect() as con:
            con.execute(_CREATE)
            con.register("_keys", keys)
            found = con.sql(
                f"SELECT c.input_sha256, c.dim, c.vector, c.request_id, c.batch_size, c.latency_ms "
                f"FROM {TABLE} c JOIN _keys USING (input_sha256) "
                "WHERE c.model = ? AND c.is_query = ?",
                params=[model, is_query],
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
    ) -> None:
        """Insert vectors (row i produced by requests[i]) in one transaction. Rows another process
        added meanwhile are kept, unless `replace` (a deliberate re-encode) overwrites them."""
        if len(hashes) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        rows = pa.table(
            {
                "model": pa.array([model] * n, pa.string()),
                "is_query": pa.array([is_query] * n, pa.bool_()),
                "input_sha256": pa.array(list(hashes), pa.string()),
                "dim": pa.array([dim] * n, pa.int32()),
                "vector": vector_column(vectors),
                "request_id": pa.array([r.request_id for r in requests], pa.string()),
                "batch_size": pa.array([r.batch_size for r in requests], pa.int32()),
                "latency_ms": pa.array([r.latency_ms for r in requests], pa.float64()),
            }
        )
        with self.warehouse.transaction() as con:
            con.execute(_CREATE)
            con.register("_rows", rows)
            con.execute(f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO {TABLE} BY NAME SELECT * FROM _rows")

    def delete_model(self, model: str) -> int:
        """Forget a model's vectors, e.g. after its weights changed (its fingerprint differs)."""
        if not self.warehouse.path.exists():
            return 0
        with self.warehouse.transaction() as con:
            con.execute(_CREATE)
            return con.execute(f"DELETE FROM {TABLE} WHERE model = ?", [model]).fetchone()[0]
