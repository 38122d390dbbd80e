"""Versioned partitions for the warehouse reader tests, importable by writer processes without Dagster."""

import pyarrow as pa

from taxo_pipeline.warehouse import Warehouse, replace_rows


def version_rows(key: str, version: int) -> tuple[pa.Table, pa.Table]:
    """A partition at `version` has 100 + version rows, each tagged with it; `summary` says the same."""
    n = 100 + version
    rows = pa.table({"key": [key] * n, "version": [version] * n, "value": list(range(n))})
    return rows, pa.table({"key": [key], "version": [version], "rows": [n]})


def write_version(warehouse: Warehouse, key: str, version: int) -> None:
    rows, summary = version_rows(key, version)
    with warehouse.transaction() as con:  # two tables, one commit: a reader sees both or neither
        replace_rows(con, "results", {"key": key}, rows)
        replace_rows(con, "summary", {"key": key}, summary)
