"""The DuckDB warehouse: short-lived connections and all-or-nothing writes.

DuckDB allows one read-write process per file, so connections queue on a file lock beside the
warehouse (shared for readers), retry while a process outside taxo-pipeline holds DuckDB's own
lock, and every write (a whole table or one partition) is one transaction: a failure leaves the
previous rows in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from taxo_pipeline.locks import file_lock

log = logging.getLogger(__name__)

LOCK_WAIT_S = 300.0


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class Warehouse:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False, lock_wait_s: float = LOCK_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"warehouse {self.path} does not exist yet: materialize the pipeline first")
        # Step processes that open a fresh file together fail ("not a valid DuckDB database file"), and
        # polling DuckDB's lock starves some of them: queue on our own lock instead.
        with file_lock(self.path.with_name(self.path.name + ".lock"), shared=read_only):
            con = self._open(read_only, lock_wait_s)
            try:
                yield con
            finally:
                con.close()

    def _open(self, read_only: bool, lock_wait_s: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + lock_wait_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                log.debug("warehouse %s is locked by another process, retrying in %.2fs", self.path, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside BEGIN/COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def replace_table(self, table: str, rows: pa.Table) -> None:
        with self.transaction() as con:
            con.register("_rows", rows)
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM _rows')

    def replace_partition(self, table: str, keys: Mapping[str, str | None], rows: pa.Table) -> None:
        """Delete this partition's rows and insert the new ones, in one transaction."""
        with self.transaction() as con:
            replace_rows(con, table, keys, rows)

    def table_exists(self, table: str) -> bool:
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            return bool(
                con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
                ).fetchone()[0]
            )


def vector_column(vectors: np.ndarray) -> pa.ListArray:
    """Rows of a float matrix as FLOAT[] lists: variable length, so models of any dimension share a table."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, keys: Mapping[str, str | None], rows: pa.Table) -> None:
    """Inside the caller's transaction: delete the rows matching `keys` (NULL-safe) and insert `rows`.
    `rows` must carry the key columns; the table is created from their schema on first use, and
    columns it lacks (a warehouse written by an older version) are added."""
    if missing := [k for k in keys if k not in rows.column_names]:
        raise ValueError(f"rows for {table} lack partition key columns {missing}")
    con.register("_rows", rows)
    con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM _rows LIMIT 0')
    existing = {name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()}  # fmt: skip
    for name, column_type, *_ in con.execute("DESCRIBE SELECT * FROM _rows").fetchall():
        if name not in existing:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {column_type}')
    where = " AND ".join(f'"{k}" IS NOT DISTINCT FROM ?' for k in keys)
    con.execute(f'DELETE FROM "{table}" WHERE {where}', list(keys.values()))
    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _rows')
    con.unregister("_rows")
