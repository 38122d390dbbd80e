"""Fixtures shared by every test: the offline data in ../shared/data and an isolated workspace."""

from pathlib import Path

import pytest

from taxo_pipeline.settings import PROJECT_ROOT

SHARED_DATA = Path(PROJECT_ROOT.parent / "shared" / "data")
SAMPLE_PRODUCTS = SHARED_DATA / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = SHARED_DATA / "shopify-taxonomy" / "categories.txt"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SAMPLE_PRODUCTS.is_file() or not TAXONOMY.is_file():
        pytest.fail(f"offline data missing: expected {SAMPLE_PRODUCTS} and {TAXONOMY} (../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh data dir and warehouse, with the sources pointed at the offline copies."""
    monkeypatch.setenv("TAXO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAXO_WAREHOUSE", str(tmp_path / "warehouse" / "taxo.duckdb"))
    monkeypatch.setenv("TAXO_PRODUCTS", str(SAMPLE_PRODUCTS))
    monkeypatch.setenv("TAXO_TAXONOMY", str(TAXONOMY))
    return tmp_path
