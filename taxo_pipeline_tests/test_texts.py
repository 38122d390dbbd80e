"""Texts longer than a model can use are cut before they are sent, and the cut is counted (issue 12)."""

import pytest

from taxo_pipeline.dataset.texts import truncate_for_model


def test_truncate_for_model_cuts_long_texts_and_counts_them():
    texts, truncated = truncate_for_model(["short", "x" * 100_000, "", "y" * 10], max_chars=10)
    assert texts == ["short", "x" * 10, "", "y" * 10]
    assert truncated == 1


def test_truncate_for_model_rejects_a_non_positive_limit():
    with pytest.raises(ValueError, match="max_chars must be a positive integer, got 0"):
        truncate_for_model(["a"], max_chars=0)
