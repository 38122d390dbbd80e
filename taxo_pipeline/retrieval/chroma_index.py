"""The category index: one Chroma persistent directory per model x variant, cosine space, queried
by exact search over its stored vectors so that answers never depend on how the index was built.

Chroma's PersistentClient is not process-safe, so each collection gets its own directory and
concurrent partitions never share one; processes that do share one (text and image retrieval of a
partition, or two runs of it) take a file lock beside it. Each taxonomy depth has its own directory and
collection (the reference's names at depth 3), so switching TAXO_DEPTH never rebuilds the other's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_suffix
from taxo_pipeline.locks import file_lock
from taxo_pipeline.retrieval import exact_search
from taxo_pipeline.retrieval.categories import CategoryDocuments

ADD_BATCH = 1000


@dataclass(frozen=True)
class Match:
    path: str
    distance: float  # cosine distance, 1 - cosine similarity


def _at_depth(variant: str, depth: Depth) -> str:
    """The variant's directory and collection suffix: the variant itself at depth 3, else `full-path-depth-full`,
    `leaf-depth-l5` ... (Chroma allows letters, digits, `.`, `_` and `-` in a collection name)."""
    return variant if depth == MAX_LEVEL else f"{variant}-depth-{depth_suffix(depth)}"


def collection_name(model_slug: str, variant: str, depth: Depth = MAX_LEVEL) -> str:
    return f"{model_slug}-{_at_depth(variant, depth)}"


class CategoryIndex:
    def __init__(self, index_dir: Path, model_slug: str, variant: str, depth: Depth = MAX_LEVEL):
        self.directory = Path(index_dir) / model_slug / _at_depth(variant, depth)
        self.name = collection_name(model_slug, variant, depth)
        # A reader in another process during a rebuild gets Chroma errors or empty results: readers
        # share this lock, a rebuild (and opening the directory, which may create it) holds it alone.
        self._lock = self.directory.with_name(f"{self.directory.name}.lock")
        import chromadb  # a second to import: only processes that open an index pay it
        from chromadb.config import Settings

        with file_lock(self._lock):
            self._client = chromadb.PersistentClient(
                path=str(self.directory), settings=Settings(anonymized_telemetry=False)
            )

    def count(self) -> int:
        with file_lock(self._lock, shared=True):
            try:
                return self._client.get_collection(self.name).count()
            except Exception:  # chromadb raises NotFoundError or ValueError by version
                return 0

    def fingerprint(self) -> str | None:
        with file_lock(self._lock, shared=True):
            try:
                return (self._client.get_collection(self.name).metadata or {}).get("fingerprint")
            except Exception:  # chromadb raises NotFoundError or ValueError by version
                return None

    def sync(self, categories: CategoryDocuments, vectors: np.ndarray, force: bool = False) -> bool:
        """Make the collection hold exactly these categories and vectors; rebuild only when they
        changed (or `force`). Returns whether it was rebuilt."""
        if len(categories.ids) != len(vectors):
            raise ValueError(f"{self.name}: {len(categories.ids)} categories but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        digest = hashlib.sha256(vectors.tobytes())
        for text in (*categories.ids, *categories.documents):
            digest.update(text.encode() + b"\0")
        fingerprint = digest.hexdigest()
        with file_lock(self._lock):
            if not force and self.fingerprint() == fingerprint and self.count() == len(categories.ids):
                return False
            if self.fingerprint() is not None or self.count():
                self._client.delete_collection(self.name)
            collection = self._client.create_collection(
                self.name, metadata={"hnsw:space": "cosine", "fingerprint": fingerprint}
            )
            for start in range(0, len(categories.ids), ADD_BATCH):
                end = start + ADD_BATCH
                collection.add(
                    ids=categories.ids[start:end],
                    embeddings=vectors[start:end],
                    documents=categories.documents[start:end],
                    metadatas=[{"path": p, "level": lvl} for p, lvl in zip(categories.ids[start:end], categories.levels[start:end])],
                )
            return True

    def stored(self) -> tuple[list[str], np.ndarray]:
        """The stored ids in path order and their vectors (float32), for exact search in memory."""
        with file_lock(self._lock, shared=True):
            stored = self._client.get_collection(self.name).get(include=["embeddings"])
        order = sorted(range(len(stored["ids"])), key=stored["ids"].__getitem__)
        return [stored["ids"][i] for i in order], np.asarray(stored["embeddings"], dtype=np.float32)[order]

    def scores(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The stored ids in path order, and the cosine similarity of every vector (rows) to each of them.

        Exact cosine search over the stored vectors rather than Chroma's HNSW: the graph depends on the
        threads that built it, so two builds of identical vectors (MiniLM, real L3 taxonomy) disagreed on
        7 to 10 of 644 top-1 answers, and a taxonomy of a few thousand categories is one matrix product."""
        ids, stored_vectors = self.stored()
        return ids, exact_search.cosine_scores(np.asarray(vectors, dtype=np.float32), stored_vectors)

    def query(self, vectors: np.ndarray, top_k: int) -> list[list[Match]]:
        """The `top_k` categories nearest each vector, best first; equal scores in path order."""
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k <= 0:
            raise ValueError(f"{self.name}: top_k must be a positive integer, got {top_k!r}")
        ids, scores = self.scores(vectors)
        return [[Match(path, 1.0 - score) for path, score in row] for row in exact_search.top_k(scores, ids, top_k)]
