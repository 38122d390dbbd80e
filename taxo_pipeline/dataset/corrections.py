"""Reviewers' corrections: products a person labelled (e.g. from the `review_queue` view), one row each, in
a CSV, JSON Lines or Parquet file (TAXO_CORRECTIONS) with the columns

    product_id, category, product_title, product_description

`category` is a taxonomy path (`A > B > C`, any depth; trimmed to TAXO_DEPTH as the evaluation's labels
are). The corrected product's text travels in the same file (one of title and description may be empty),
so a correction needs no catalogue beside it: label transfer encodes that text and lets it vote.

The whole file is checked before anything uses it; every bad row is named with the file and its line
(JSON Lines) or data row (CSV, Parquet): a missing column, an empty id, an id that is neither a string
nor a whole number, no text, an unknown category, or an id labelled twice with different categories (the
same label twice is one correction)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import polars as pl

from taxo_pipeline.dataset.products import CATALOGUE_COLUMNS, numbered_records, row_unit
from taxo_pipeline.dataset.taxonomy import Depth, trim_path
from taxo_pipeline.errors import InputError
from taxo_pipeline.files import file_sha256

COLUMNS = ("product_id", "category", *CATALOGUE_COLUMNS)
LABEL = "ground_truth_category"  # the column label transfer reads, as in the evaluation table
SHOWN = 20  # bad rows listed in one error
NONE = "none"  # the fingerprint of no corrections (TAXO_CORRECTIONS unset)


def corrections_fingerprint(path: Path | None) -> str:
    """The corrections' data version: the file's SHA-256 (its content, wherever it lies), `none` unset."""
    if path is None:
        return NONE
    if not Path(path).is_file():
        raise InputError(f"corrections file {path} does not exist (TAXO_CORRECTIONS): fix the path or unset it")
    return file_sha256(Path(path))


def read_corrections(path: Path, categories: Collection[str], depth: Depth) -> pl.DataFrame:
    """product_id, product_title, product_description, ground_truth_category (trimmed to `depth`), one row
    per corrected product in file order; `categories`: every path of the full taxonomy."""
    path, problems = Path(path), []
    where, unit = {}, row_unit(Path(path))
    rows: dict[str, tuple[str, str, str]] = {}
    for number, record in numbered_records(path, "corrections"):
        if unit == "row" and (missing := [c for c in COLUMNS if c not in record]):  # a CSV or Parquet header
            raise InputError(f"corrections file {path} lacks column(s) {', '.join(missing)} (it has: "
                             f"{', '.join(record)}); every row needs {', '.join(COLUMNS)}")  # fmt: skip
        problem = _problem(record, categories)
        if problem is None:
            product_id, category = _text(record["product_id"]), record["category"].strip()
            if product_id in rows and rows[product_id][2] != category:
                problem = (f"product_id {product_id!r} is labelled {category!r} here but {rows[product_id][2]!r} on "
                           f"{unit} {where[product_id]}: keep one label per product")  # fmt: skip
            elif product_id not in rows:
                where[product_id] = number
                rows[product_id] = (_text(record["product_title"]), _text(record["product_description"]), category)
        if problem:
            problems.append(f"{unit} {number}: {problem}")
    if problems:
        more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise InputError(f"corrections file {path}: {len(problems)} bad row(s): " + "; ".join(problems[:SHOWN]) + more)
    return pl.DataFrame(
        [(pid, title, text, trim_path(category, depth)) for pid, (title, text, category) in rows.items()],
        schema={"product_id": pl.String, "product_title": pl.String, "product_description": pl.String, LABEL: pl.String},
        orient="row",
    )


def _problem(record: dict, categories: Collection[str]) -> str | None:
    """What is wrong with one row, or None."""
    if missing := [c for c in COLUMNS if c not in record]:
        return f"lacks {', '.join(missing)} (every row needs {', '.join(COLUMNS)}; a title or a description may be empty)"
    product_id, category = record["product_id"], record["category"]
    if product_id is None or not str(product_id).strip():
        return "empty product_id: every correction names the product it corrects"
    if not (isinstance(product_id, str) or (isinstance(product_id, int) and not isinstance(product_id, bool))):
        return f"product_id is {product_id!r}: write it as a string"
    if not isinstance(category, str) or not category.strip():
        return f"empty category for product_id {product_id!r}: give a taxonomy path such as 'A > B > C'"
    if category.strip() not in categories:
        return f"unknown category {category.strip()!r} for product_id {product_id!r}: not a path of the taxonomy"
    if not (_text(record["product_title"]).strip() or _text(record["product_description"]).strip()):
        return f"product_title and product_description are both empty for product_id {product_id!r}"
    return None


def _text(value) -> str:
    return "" if value is None else str(value)
