"""What classifiers read from the models: vectors, scores and labels through one SIE client (and its
embedding cache), with every request's latency kept by stage so each approach reports its own.
Category scores are always per node of the taxonomy at its depth (L1-L3 by default), whatever the variant's
documents (retrieval/variants.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from taxo_pipeline.dataset.tables import load_taxonomy_full_depth
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.dataset.texts import truncate_for_model
from taxo_pipeline.retrieval.categories import CategoryDocuments
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.retrieval.exact_search import normalise, top_k, unit_scores
from taxo_pipeline.retrieval.full_depth import NodeMap
from taxo_pipeline.retrieval.variants import variant_documents
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.sie.model_catalogue import model_slug

if TYPE_CHECKING:
    from taxo_pipeline.workspace import Workspace

QUERY_STAGE = "query_encode"
CATEGORY_STAGE = "category_encode"
EXTRACT_STAGE = "extract"
RERANK_STAGE = "rerank"
# Category documents go 64 per request: their latency is not the one reported (bench/benchmark.py).
CATEGORY_BATCH = 64


class Evidence:
    def __init__(
        self, client: InferenceClient, index_dir: Path, taxonomy: TrimmedTaxonomy, categories: Sequence[str] | None = None,
        *, max_chars: int,
    ):  # fmt: skip
        """`categories`: every category of the full taxonomy (taxonomy_full_depth), which the full-depth
        documents are made of; only approaches that encode full-depth documents need it. `max_chars`: the
        longest text sent to a model (TAXO_MAX_TEXT_CHARS)."""
        self.client = client
        self.index_dir = Path(index_dir)
        self.taxonomy = taxonomy
        self.requests: dict[str, list[LatencyRecord]] = defaultdict(list)
        self.from_cache = 0
        self.truncated = 0  # texts cut to TAXO_MAX_TEXT_CHARS before they were sent
        self._max_chars = max_chars
        self._documents = cache(lambda variant: variant_documents(taxonomy, variant, categories))
        self._category_vectors: dict[tuple[str, str], np.ndarray] = {}
        self._searchables: dict[tuple, tuple[np.ndarray, NodeMap]] = {}
        self._index_directories: dict[tuple[str, str], Path] = {}

    @property
    def sie_requests(self) -> int:
        """Requests actually sent (cached vectors cost none)."""
        return self.client.request_count

    def _cut(self, texts: Sequence[str]) -> list[str]:
        cut, count = truncate_for_model(texts, self._max_chars)
        self.truncated += count
        return cut

    def encode(
        self, model: str, inputs: Sequence[str | bytes], *, is_query: bool, batch_size: int, stage: str = QUERY_STAGE
    ) -> np.ndarray:
        inputs = [self._cut([value])[0] if isinstance(value, str) else value for value in inputs]
        encoded = self.client.encode_detailed(model, inputs, is_query=is_query, batch_size=batch_size)
        self.requests[stage] += encoded.requests
        self.from_cache += int(np.count_nonzero(encoded.from_cache))
        return encoded.vectors

    def category_documents(self, variant: str) -> CategoryDocuments:
        return self._documents(variant)

    def category_vectors(self, model: str, variant: str) -> np.ndarray:
        """The variant's category documents encoded by `model` (the vectors category_embeddings stored)."""
        if (model, variant) not in self._category_vectors:
            documents = self.category_documents(variant).documents
            self._category_vectors[model, variant] = self.encode(
                model, documents, is_query=False, batch_size=CATEGORY_BATCH, stage=CATEGORY_STAGE
            )
        return self._category_vectors[model, variant]

    def category_scores(self, model: str, variant: str, queries: np.ndarray) -> np.ndarray:
        """Products x taxonomy.paths: the cosine similarity of each query to each node's best document
        of the variant (full-depth: the best of the node's subtree; otherwise the node's own)."""
        load = lambda: (self.category_vectors(model, variant), self.category_documents(variant).ids)  # noqa: E731
        unit, nodes = self._searchable(("documents", model, variant), load)
        return nodes.best(unit_scores(queries, unit))

    def nearest_categories(self, model: str, variant: str, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per query, the k best L1-L3 nodes with their cosine similarity, by the same rule as
        category_scores, searched in the model's category index of the variant (as the reference)."""
        try:
            unit, nodes = self._searchable(("index", model, variant), lambda: self._index_stored(model, variant))
            scores = nodes.best(unit_scores(queries, unit))
        except ValueError as exc:
            raise LookupError(
                f"the category index for {model} {variant} in {self._index_directories[model, variant]} does not "
                f"match the taxonomy ({exc}): materialize category_embeddings for this partition again"
            ) from exc
        return top_k(scores, self.taxonomy.paths, k)

    def _searchable(self, key: tuple, load: Callable[[], tuple[np.ndarray, Sequence[str]]]) -> tuple[np.ndarray, NodeMap]:
        """Unit-length document vectors and their NodeMap, worked out once per Evidence: a chunked run, or
        the classification service's requests, then spend only the product with the queries."""
        if key not in self._searchables:
            vectors, ids = load()
            self._searchables[key] = (normalise(vectors), NodeMap(ids, self.taxonomy))
        return self._searchables[key]

    def _index_stored(self, model: str, variant: str) -> tuple[np.ndarray, list[str]]:
        """The vectors and ids stored in the model's category index of the variant (read once: Chroma is
        opened by the first search only)."""
        index = self.category_index(model, variant)
        self._index_directories[model, variant] = index.directory
        ids, vectors = index.stored()
        return vectors, ids

    def category_index(self, model: str, variant: str) -> CategoryIndex:
        index = CategoryIndex(self.index_dir, model_slug(model), variant, self.taxonomy.depth)
        if not index.count():
            raise LookupError(
                f"no category index for {model} {variant} in {index.directory}: "
                "materialize category_embeddings for this partition first"
            )
        return index

    def extract(self, model: str, texts: Sequence[str], labels: Sequence[str], batch_size: int) -> list[list[dict]]:
        before = self.client.request_count
        classified = self.client.extract(model, self._cut(texts), list(labels), batch_size=batch_size)
        self.requests[EXTRACT_STAGE] += self.client.latencies[before:]
        return classified

    def score(
        self, model: str, queries: Sequence[str], candidates: Sequence[Sequence[str]], batch_size: int
    ) -> list[np.ndarray]:
        before = self.client.request_count
        scores = self.client.score_many(model, self._cut(queries), [list(c) for c in candidates], batch_size=batch_size)
        self.requests[RERANK_STAGE] += self.client.latencies[before:]
        return scores


def workspace_evidence(workspace: Workspace, client: InferenceClient, taxonomy: TrimmedTaxonomy, variant: str) -> Evidence:
    """Evidence for `variant`'s documents in `workspace`: its index folder, its full taxonomy where the
    documents need it, its text limit."""
    categories = load_taxonomy_full_depth(workspace, variant)
    return Evidence(client, workspace.index_dir, taxonomy, categories, max_chars=workspace.settings.max_text_chars)
