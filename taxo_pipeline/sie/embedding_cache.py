"""Embeddings already computed, kept in the warehouse so SIE never encodes the same input twice.

Rows are keyed by (model, the model's fingerprint, is_query, sha256 of the input's bytes: UTF-8 text
or image file), and remember the request that produced them (id, batch size, latency), so latency
figures survive runs served from the cache. The fingerprint (catalogue entry and weight files, see
`catalogue.fingerprint`) makes a model whose weights or config changed miss the cache, and its older
vectors are deleted when the new ones are stored. A model that is not in the catalogue (one only a
remote server knows) has the empty fingerprint: its vectors are keyed by the model id alone.
The table has a file of its own beside the warehouse, which is never published (its SQL:
warehouse/embedding_cache.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint
from taxo_pipeline.warehouse import embedding_cache
from taxo_pipeline.warehouse.embedding_cache import UNKNOWN_FINGERPRINT
from taxo_pipeline.warehouse.store import Warehouse, vector_column


def input_sha256(value: str | bytes) -> str:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).hexdigest()


class EmbeddingCache:
    """The warehouse cache, keyed by the fingerprints of `catalogue` (the workspace's).
    `read_only`: look vectors up but never write, for catalogue runs, whose query vectors are used once
    and which must not take the warehouse's one writer lock (concurrent shards, other machines)."""

    def __init__(self, warehouse: Warehouse, catalogue: Catalogue, read_only: bool = False):
        self.warehouse = warehouse
        self.catalogue = catalogue
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
        found = embedding_cache.lookup(self.warehouse, model, self.fingerprint(model), is_query, hashes, self.read_only)
        if found is None or found.num_rows == 0:
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
        return embedding_cache.insert(self.warehouse, rows, model, current, replace)
