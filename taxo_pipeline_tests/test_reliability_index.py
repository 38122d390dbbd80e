"""The category index (issue 12): a clear error for a bad top_k, and answers that do not depend on how
the index was built."""

import numpy as np
import pytest

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories
from taxo_pipeline.retrieval.categories import CategoryDocuments, category_documents
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.retrieval.exact_search import cosine_scores, top_k
from taxo_pipeline_tests.factories import TAXONOMY


def test_query_with_non_positive_top_k_is_a_clear_error(tmp_path):
    index = CategoryIndex(tmp_path, "org__model", "leaf")
    index.sync(CategoryDocuments(ids=["A", "B"], documents=["a", "b"], levels=[1, 1]), np.eye(2))
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"top_k must be a positive integer, got {bad}"):
            index.query(np.eye(2), bad)


def test_identical_vectors_give_identical_exact_results_across_index_builds(tmp_path, shared_data):
    # HNSW's graph depends on insertion threads: two builds disagreed on top-1 for 109 of 2,000 queries.
    categories = category_documents(TrimmedTaxonomy.from_categories(parse_categories(TAXONOMY)), "full-path")
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((len(categories.ids), 384)).astype(np.float32)
    queries = rng.standard_normal((500, 384)).astype(np.float32)
    results = []
    for build in ("a", "b"):
        index = CategoryIndex(tmp_path / build, "org__model", "full-path")
        assert index.sync(categories, vectors) is True
        assert index.count() == 1863
        results.append(index.query(queries, 5))
    exact = top_k(cosine_scores(queries, vectors), categories.ids, 5)
    assert results[0] == results[1]
    assert [[m.path for m in row] for row in results[0]] == [[path for path, _ in row] for row in exact]
    distances = [[m.distance for m in row] for row in results[0]]
    assert np.allclose(distances, [[1.0 - score for _, score in row] for row in exact], atol=1e-5)


def test_ties_are_broken_by_category_path(tmp_path):
    categories = CategoryDocuments(ids=["A > C", "A > B", "A"], documents=["c", "b", "a"], levels=[2, 2, 1])
    index = CategoryIndex(tmp_path, "org__model", "leaf")
    index.sync(categories, np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    (row,) = index.query(np.array([[2.0, 0.0]]), 5)
    assert [(m.path, round(m.distance, 6)) for m in row] == [("A > B", 0.0), ("A > C", 0.0), ("A", 1.0)]
