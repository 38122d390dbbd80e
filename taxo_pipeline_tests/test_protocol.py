"""The evaluation protocol's fixed dev/test split, on the real sample rows as the loader ids them."""

import numpy as np
import pytest

from taxo_pipeline.dataset.cleaning import clean_products
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import parse_categories
from taxo_pipeline.evaluation.protocol import DEV, TEST, split_mask, split_of
from taxo_pipeline.retrieval.neighbour_votes import assign_folds
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS, TAXONOMY


@pytest.fixture(scope="module")
def sample_ids() -> list[str]:
    clean, _ = clean_products(read_products(SAMPLE_PRODUCTS), parse_categories(TAXONOMY))
    return clean["product_id"].to_list()


def test_the_sample_splits_half_and_half_by_its_hugging_face_ids(sample_ids):
    # the loader ids the sample's rows by HF split and row, so a row keeps its part in any export of it
    assert sample_ids[:3] == ["train-2", "train-16", "train-17"]
    dev = split_mask(sample_ids, DEV)
    assert (int(dev.sum()), int((~dev).sum())) == (132, 128)
    # pinned: a change of the hash or salt re-draws the split and voids every reported figure
    assert [split_of(i) for i in sample_ids[:5]] == [DEV, DEV, TEST, DEV, TEST]
    assert [bool(d) for d in dev[:5]] == [True, True, False, True, False]
    np.testing.assert_array_equal(split_mask(sample_ids, TEST), ~dev)


def test_a_products_part_depends_on_its_id_alone(sample_ids):
    reordered = list(reversed(sample_ids)) + ["test-5", "train-999999"]  # other order, more rows
    parts = dict(zip(reordered, split_mask(reordered, DEV)))
    assert all(parts[i] == (split_of(i) == DEV) for i in sample_ids)
    assert (parts["test-5"], parts["train-2"]) == (True, True)


def test_the_split_is_independent_of_label_transfer_folds(sample_ids):
    folds, dev = assign_folds(sample_ids), split_mask(sample_ids, DEV)
    per_fold = [(int((dev & (folds == f)).sum()), int((~dev & (folds == f)).sum())) for f in range(5)]
    assert per_fold == [(25, 24), (22, 24), (23, 27), (30, 30), (32, 23)]


def test_a_larger_dev_fraction_only_moves_test_products_to_dev():
    ids = [f"train-{i}" for i in range(2000)]
    half, sixty = split_mask(ids, DEV), split_mask(ids, DEV, dev_fraction=0.6)
    assert np.all(sixty[half]) and int(half.sum()) == 1023 and int(sixty.sum()) == 1202


def test_bad_input_is_refused_with_its_value():
    with pytest.raises(ValueError, match="product_id must be a non-empty string, got ''"):
        split_of("")
    with pytest.raises(ValueError, match="product_id must be a non-empty string, got 7"):
        split_of(7)
    with pytest.raises(ValueError, match=r"dev_fraction must be strictly between 0 and 1, got 1.0"):
        split_of("train-2", dev_fraction=1.0)
    with pytest.raises(ValueError, match="unknown part 'train': expected one of dev, test"):
        split_mask(["train-2"], "train")
