"""Where taxo-pipeline reads and writes, resolved from environment variables.

Every location can be overridden by an env var so tests and users can point the whole
pipeline at other folders without touching code.
"""

from __future__ import annotations

import os
from pathlib import Path

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_suffix, parse_depth
from taxo_pipeline.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PRODUCTS_URL = (
    "https://huggingface.co/datasets/Shopify/product-catalogue/resolve/main/data/"
    "train-00000-of-00015.parquet"
)
TAXONOMY_URL = "https://raw.githubusercontent.com/Shopify/product-taxonomy/main/dist/en/categories.txt"

# File names the reference evaluation uses under data/ (seed-rules.md).
RAW_PRODUCTS_FILE = "train-00000-of-00015.parquet"
RAW_TAXONOMY_FILE = "shopify-taxonomy-categories.txt"
CLEAN_FULL_DEPTH_FILE = "shopify-products-clean-full-depth.parquet"
TAXONOMY_L3_FILE = "shopify-taxonomy-l3.parquet"
# Not one of the reference's: every category at its full depth, for the full-depth category documents.
TAXONOMY_FULL_DEPTH_FILE = "shopify-taxonomy-full-depth.parquet"
EXPERIMENT_L3_FILE = "shopify-products-experiment-l3.parquet"


def _path_from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Downloaded and derived files (TAXO_DATA_DIR, default ./data)."""
    return _path_from_env("TAXO_DATA_DIR", PROJECT_ROOT / "data")


def warehouse_path() -> Path:
    """The DuckDB warehouse file (TAXO_WAREHOUSE, default ./warehouse/taxo.duckdb)."""
    return _path_from_env("TAXO_WAREHOUSE", PROJECT_ROOT / "warehouse" / "taxo.duckdb")


def index_dir() -> Path:
    """Chroma category indexes, one directory per model x variant (TAXO_INDEX_DIR, default ./data/chroma)."""
    return _path_from_env("TAXO_INDEX_DIR", data_dir() / "chroma")


def products_source() -> str:
    """Raw products: a local path or URL (TAXO_PRODUCTS, default the Hugging Face shard)."""
    return os.environ.get("TAXO_PRODUCTS") or PRODUCTS_URL


def taxonomy_source() -> str:
    """Shopify categories.txt: a local path or URL (TAXO_TAXONOMY, default Shopify's main branch)."""
    return os.environ.get("TAXO_TAXONOMY") or TAXONOMY_URL


def taxonomy_depth() -> Depth:
    """Levels the taxonomy and the labels are trimmed to (TAXO_DEPTH: 3, the reference's, by default;
    `full` for every level, None; or a positive whole number)."""
    value = os.environ.get("TAXO_DEPTH", "").strip()
    if not value:
        return MAX_LEVEL
    try:
        return parse_depth(value)
    except ValueError:
        raise InputError(
            f"TAXO_DEPTH={value!r} is not a taxonomy depth: expected 3 (the default), full, "
            "or a positive whole number of levels"
        ) from None


def _at_depth(reference_name: str, depth: Depth) -> str:
    # The reference's names at depth 3; other depths get their own files, so switching back and
    # forth never overwrites the other depth's tables.
    return reference_name.replace("-l3.", f"-{depth_suffix(depth)}.")


def taxonomy_file(depth: Depth) -> str:
    """The trimmed taxonomy's Parquet file: shopify-taxonomy-l3.parquet at depth 3, -full, -l5 ..."""
    return _at_depth(TAXONOMY_L3_FILE, depth)


def experiment_file(depth: Depth) -> str:
    """The evaluation table's Parquet file: shopify-products-experiment-l3.parquet at depth 3, -full ..."""
    return _at_depth(EXPERIMENT_L3_FILE, depth)


def _positive_number(var: str, default: float, kind: type = int) -> float:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        noun = "whole number" if kind is int else "number"
        raise InputError(f"{var}={text!r}: expected a positive {noun} (default {default})")
    return value


def serve_max_batch() -> int:
    """The most products one `POST /classify` of `taxo-pipeline serve` may carry; more get 413
    (TAXO_SERVE_MAX_BATCH, default 256)."""
    return int(_positive_number("TAXO_SERVE_MAX_BATCH", 256))


def serve_reload_s() -> float:
    """How often `taxo-pipeline serve` checks the warehouse for a re-evaluated result to load, in seconds
    (TAXO_SERVE_RELOAD_S, default 5)."""
    return float(_positive_number("TAXO_SERVE_RELOAD_S", 5.0, float))
