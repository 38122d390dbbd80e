"""Reviewed products keep their reviewer's label. A catalogue product whose id and text (title and
description, whitespace aside) are a correction's in TAXO_CORRECTIONS gets the corrected category, at the
configured depth, with confidence 1: it is never sent to review again and `reviewed` says why. The text
must match too, so a correction never lands on another product that happens to share its id (ids are
unique only within a catalogue), and a product whose text changed since its review is classified afresh.
The model's own candidates stay in its top-k.

A shard's fingerprint takes in the reviews that match it, so a new review rewrites only the shards it
matches (an approach that learns from the corrections, label transfer, reclassifies every shard anyway)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import polars as pl

from taxo_pipeline.dataset.corrections import LABEL

Reviews = Mapping[str, tuple[str, str]]  # product_id -> (its normalised text, the reviewed category)
TEXT = ("product_id", "product_title", "product_description")


def _text(title: str | None, description: str | None) -> str:
    """Title and description, each with its whitespace collapsed, kept apart (a title that moved into the
    description is other text)."""
    return "\x1f".join(" ".join((part or "").split()) for part in (title, description))


def reviews(corrections: pl.DataFrame | None) -> dict[str, tuple[str, str]]:
    """The reviews in a corrections table (dataset/corrections.py's read_corrections); none without one."""
    if corrections is None:
        return {}
    rows = corrections.select(*TEXT, LABEL).iter_rows()
    return {product_id: (_text(title, description), category) for product_id, title, description, category in rows}


def reviewed_category(reviewed: Reviews, product_id: str | None, title: str | None, description: str | None) -> str | None:
    """The reviewer's category of this product, or None where no review matches its id and text."""
    review = reviewed.get(product_id) if product_id is not None else None
    return review[1] if review and review[0] == _text(title, description) else None


def reviewed_categories(products: pl.DataFrame, reviewed: Reviews) -> list[str | None]:
    """Per product of `products` (product_id, product_title, product_description), in order: its reviewed
    category or None. Only the rows whose id has a review are looked at, so a shard costs one `is_in`."""
    found: list[str | None] = [None] * products.height
    if not reviewed:
        return found
    candidates = np.flatnonzero(products["product_id"].is_in(list(reviewed)).to_numpy())
    for row, (product_id, title, description) in zip(candidates, products[candidates].select(*TEXT).iter_rows()):
        found[row] = reviewed_category(reviewed, product_id, title, description)
    return found


def shard_fingerprint(rows_fingerprint: str, products: pl.DataFrame, reviewed: Reviews) -> str:
    """A shard's fingerprint with the reviews that match its products: unchanged where none does."""
    categories = reviewed_categories(products, reviewed)
    matched = [(p, c) for p, c in zip(products["product_id"].to_list(), categories, strict=True) if c is not None]
    if not matched:
        return rows_fingerprint
    return hashlib.sha256(json.dumps([rows_fingerprint, matched]).encode()).hexdigest()[:16]
