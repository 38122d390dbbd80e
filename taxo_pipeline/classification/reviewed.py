"""Reviewed products keep their reviewer's label. A catalogue product whose id and text (title and
description, whitespace aside) are a correction's in TAXO_CORRECTIONS gets the corrected category, at the
configured depth, with confidence 1: it is never sent to review again and `reviewed` says why. Both must
match because product ids are only unique within a catalogue, and a product whose text changed since the
review is classified afresh. The model's own candidates stay in its top-k."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from taxo_pipeline.dataset.corrections import LABEL

Reviews = Mapping[str, tuple[str, str]]  # product_id -> (its normalised text, the reviewed category)


def _text(title: str | None, description: str | None) -> str:
    """Title and description, each with its whitespace collapsed, kept apart (a title that moved into the
    description is other text)."""
    return "\x1f".join(" ".join((part or "").split()) for part in (title, description))


def reviews(corrections: pl.DataFrame | None) -> dict[str, tuple[str, str]]:
    """The reviews in a corrections table (dataset/corrections.py's read_corrections); none without one."""
    if corrections is None:
        return {}
    rows = corrections.select("product_id", "product_title", "product_description", LABEL).iter_rows()
    return {product_id: (_text(title, description), category) for product_id, title, description, category in rows}


def reviewed_categories(products: pl.DataFrame, reviewed: Reviews) -> list[str | None]:
    """Per product of `products` (product_id, product_title, product_description), in order: its reviewed
    category, or None where no review matches its id and text."""
    if not reviewed:
        return [None] * products.height
    found: list[str | None] = []
    texts = products.select("product_id", "product_title", "product_description")
    for product_id, title, description in texts.iter_rows():
        review = reviewed.get(product_id)
        found.append(review[1] if review and review[0] == _text(title, description) else None)
    return found
