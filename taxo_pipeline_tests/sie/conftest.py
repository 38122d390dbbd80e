"""SIE tests each write their warehouse and data under their own tmp dir (the SIE fixtures are in
the root conftest, shared with the pipeline tests)."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def sie_workspace(tmp_path, monkeypatch) -> Path:
    """Every SIE test writes its warehouse and data under its own tmp dir, never into the repo."""
    monkeypatch.setenv("TAXO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAXO_WAREHOUSE", str(tmp_path / "warehouse" / "taxo.duckdb"))
    return tmp_path
