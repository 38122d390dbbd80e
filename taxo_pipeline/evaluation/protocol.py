"""The evaluation protocol: one fixed split of the labelled products into a development part, on which
every design choice (document construction, weights, temperatures, numbers of neighbours) is made,
and a test part that no choice ever looks at, on which the figures are reported.

A product's part comes from a hash of its `product_id` alone: it does not depend on row order, on the
other rows, or on the file the product came from (the ids are the Hugging Face split and row,
`train-123`, wherever the row was exported), so a product keeps its part when rows are added or
dropped, and a new catalogue is split the same way. The hash is salted so that the part is
independent of label transfer's cross-validation folds (retrieval/neighbour_votes.py hashes the bare id).

Half and half. With the 260 sample rows each part holds about 130 (132 dev, 128 test). The choices made
on the development part are few and coarse (a handful of document constructions, two label-transfer
settings), and differences that matter show at 130 rows: a paired bootstrap separates a +0.05 hF1
gain from zero. The reported figure is a ratio that must clear a threshold, and its spread grows as
the test part shrinks: at 128 rows the 90% interval of the best ratio is already about +-0.3, and a
60/40 split would widen it by a tenth while the dev part gains too little to change any choice.
bench/quality.py prints the figures of both parts and that interval.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DEV = "dev"
TEST = "test"
PARTS = (DEV, TEST)
DEV_FRACTION = 0.5
# Fixed once, before any result was looked at; changing it re-draws the split and voids every figure.
SALT = "taxo-pipeline/protocol/v1:"


def split_of(product_id: str, dev_fraction: float = DEV_FRACTION) -> str:
    """`dev` or `test` for one product, from the first 8 bytes of sha256(salt + id) read as a fraction."""
    if not isinstance(product_id, str) or not product_id:
        raise ValueError(f"product_id must be a non-empty string, got {product_id!r}")
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be strictly between 0 and 1, got {dev_fraction}")
    digest = hashlib.sha256((SALT + product_id).encode("utf-8")).digest()
    return DEV if int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction else TEST


def split_mask(product_ids: Sequence[str], part: str, dev_fraction: float = DEV_FRACTION) -> np.ndarray:
    """Bool per product: whether it belongs to `part`."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: expected one of {', '.join(PARTS)}")
    return np.array([split_of(pid, dev_fraction) == part for pid in product_ids], dtype=bool)
