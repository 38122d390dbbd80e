"""Versioned partitions for the warehouse reader tests, importable by writer processes without Dagster, and
warehouses as earlier versions left them, for the migration tests."""

import shutil
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pyarrow as pa

from taxo_pipeline.warehouse.store import Warehouse, replace_rows


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


def earlier_warehouse(path: Path, tables: Mapping[str, pa.Table], views: Mapping[str, str] | None = None) -> Warehouse:
    """The warehouse at `path` as a version from before schema versions left it: its writer file holding
    `tables` and `views` (name: query) and no schema_version table, and the published copy of it."""
    warehouse = Warehouse(path)
    with duckdb.connect(str(warehouse.writer.path)) as con:
        for name, rows in tables.items():
            con.register("_rows", rows)
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _rows')
            con.unregister("_rows")
        for name, query in (views or {}).items():
            con.execute(f'CREATE VIEW "{name}" AS {query}')
    shutil.copyfile(warehouse.writer.path, warehouse.path)
    return warehouse
