"""The DuckDB warehouse: files only the pipeline opens, and a published read-only copy for everyone else.

DuckDB lets one process write a file, and a reader in another process (a notebook, a BI tool, the
DuckDB CLI) makes every writer fail. So the pipeline reads and writes its own file beside the
warehouse, `.<name>.writer.duckdb` (warehouse/.taxo.writer.duckdb by default), and after each
committed write the warehouse itself (TAXO_WAREHOUSE) is published again: the writer file is copied
to a temp file beside it, synced, and renamed over it. A reader keeps the file it opened, a whole
snapshot, until it reconnects; no reader opens the file a writer writes, so neither waits on the other.
The embedding cache, most of the bytes and of no use to a reader, has a file of its own,
`.<name>.cache.duckdb`, never published.

Inside the pipeline, connections to a file queue on a file lock beside it (shared for readers), and
every write (a whole table or one partition) is one transaction: a failure leaves the previous rows in
place and publishes nothing. The first connection a process makes to a writer file brings its schema to
the code's (schema.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from taxo_pipeline.files import write_atomic
from taxo_pipeline.locks import file_lock
from taxo_pipeline.warehouse import schema

log = logging.getLogger(__name__)

LOCK_WAIT_S = 300.0
CACHE_TABLE = "embedding_cache"
# Files are created in this storage format, so DuckDB 1.4 and later (the `duckdb` CLI from PyPI, BI tools
# bundling an older DuckDB) can read the published copy; a file keeps the format it was created with.
STORAGE_VERSION = "v1.4.0"
# The writer files this process found at the code's schema version, as (device, inode): checked once per file.
_CURRENT: dict[Path, tuple[int, int]] = {}


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def _beside(published: Path, role: str) -> Path:
    """taxo.duckdb -> .taxo.<role>.duckdb"""
    return published.with_name(f".{published.stem}.{role}{published.suffix}")


class Store:
    """One DuckDB file that only taxo-pipeline opens: connections queue on a lock file beside it, and a
    transaction commits all or nothing."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def connect(self, read_only: bool = False, lock_wait_s: float = LOCK_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.exists():
            raise FileNotFoundError(f"{self.path} does not exist yet: materialize the pipeline first")
        # Step processes that open a fresh file together fail ("not a valid DuckDB database file"), and
        # polling DuckDB's lock starves some of them: queue on our own lock instead.
        with file_lock(self.lock, shared=read_only):
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
                return duckdb.connect(
                    str(self.path), read_only=read_only, config={"storage_compatibility_version": STORAGE_VERSION}
                )
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                log.debug("%s is locked by another process, retrying in %.2fs", self.path, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside BEGIN/COMMIT; any exception rolls everything back."""
        with self.connect() as con, _all_or_nothing(con):
            yield con

    def table_exists(self, table: str) -> bool:
        if not self.exists():
            return False
        with self.connect(read_only=True) as con:
            return has_table(con, table)


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table` is a table or view (information_schema lists both)."""
    # fetchall: a result left unfinished blocks the caller's next register() on this connection
    return bool(
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]
    )


@contextmanager
def _all_or_nothing(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN/COMMIT around the block, ROLLBACK on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


class Warehouse:
    """`path` is the published warehouse (TAXO_WAREHOUSE) that readers outside the pipeline open; the
    pipeline's own connections go to `writer` beside it, and the embedding cache's to `cache`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.writer = Store(_beside(self.path, "writer"))
        self.cache = Store(_beside(self.path, "cache"))
        self._publish_lock = self.path.with_name(f".{self.path.name}.publish.lock")
        # Present from a commit until a publish includes it: a publisher that finds it gone has nothing to do.
        self._unpublished = self.writer.path.with_name(self.writer.path.name + ".unpublished")

    def __repr__(self) -> str:
        return f"Warehouse({self.path})"

    def exists(self) -> bool:
        return self.path.exists() or self._unpublished.exists()

    @contextmanager
    def connect(self, read_only: bool = False, lock_wait_s: float = LOCK_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the writer file; writes through it are published only by `transaction`."""
        if read_only and not self.exists():
            raise FileNotFoundError(f"warehouse {self.path} does not exist yet: materialize the pipeline first")
        self._adopt_or_reset()
        self._migrate(read_only)
        with self.writer.connect(read_only, lock_wait_s) as con:
            yield con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing, then published: a rolled-back transaction publishes nothing."""
        with self.connect() as con:
            with _all_or_nothing(con):
                yield con
            con.execute("CHECKPOINT")  # into the file, which alone is copied (no write-ahead log)
            self._unpublished.touch()  # under the writer lock: a publisher sees the commit and the mark, or neither
        self.publish()

    def table_exists(self, table: str) -> bool:
        if not self.exists():
            return False
        with self.connect(read_only=True) as con:
            return has_table(con, table)

    def embedding_store(self) -> Store:
        """The embedding cache's file, once an earlier version's warehouse (which held the cache) is taken over."""
        self._adopt_or_reset()
        return self.cache

    def publish(self) -> bool:
        """Publish the writer file's committed state if a commit is not yet published; returns whether
        this call wrote the copy. Writers that commit while one publishes wait here, then find their
        commits in the next copy or already published: one copy serves them all."""
        with file_lock(self._publish_lock):
            if not self._unpublished.exists():
                return False
            # Shared: pipeline readers go on, writers wait, so the copy is one committed state.
            with file_lock(self.writer.lock, shared=True):
                started = time.monotonic()
                write_atomic(self.path, self._copy_writer)
                self._unpublished.unlink()
        # one per committed write: the log file's, not the terminal's
        log.debug("published %s (%.1f MB) in %.2f s", self.path, self.path.stat().st_size / 1e6,
                 time.monotonic() - started)  # fmt: skip
        return True

    def _copy_writer(self, target: Path) -> None:
        wal = self.writer.path.with_name(self.writer.path.name + ".wal")
        if wal.exists() and wal.stat().st_size:  # commits a killed writer did not checkpoint: read them too
            copy_database(self.writer.path, target)
            return
        shutil.copyfile(self.writer.path, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())

    def _adopt_or_reset(self) -> None:
        """Once per warehouse: take over a warehouse written by an earlier version (TAXO_WAREHOUSE was the
        read-write file: its tables become the writer's, its embedding cache the cache's, and it is
        published again), or start afresh when the published warehouse was deleted (as deleting
        TAXO_WAREHOUSE always did; the embedding cache stays). Never call it holding the writer lock:
        it publishes, and publishers take the publish lock before the writer lock."""
        if self.writer.exists() == self.exists():
            return
        with file_lock(self.writer.lock):
            if not self.writer.exists():
                self._unpublished.unlink(missing_ok=True)  # its writer file was deleted by hand
            if not self.writer.exists() and self.path.exists():
                self._adopt()
            elif self.writer.exists() and not self.exists():
                log.warning("%s was deleted: starting a new warehouse (removing %s)", self.path, self.writer.path)
                for stale in (self.writer.path, self.writer.path.with_name(self.writer.path.name + ".wal")):
                    stale.unlink(missing_ok=True)
                _CURRENT.pop(self.writer.path, None)  # the new file may get the old one's inode
        self.publish()

    def _adopt(self) -> None:
        log.warning("upgrading %s: the pipeline now writes %s and publishes %s as a read-only copy",
                    self.path, self.writer.path, self.path)  # fmt: skip
        if not self.cache.exists():
            write_atomic(self.cache.path, lambda tmp: copy_database(self.path, tmp, lambda t: t == CACHE_TABLE))
        write_atomic(self.writer.path, lambda tmp: copy_database(self.path, tmp, lambda t: t != CACHE_TABLE))
        self._unpublished.touch()
        # The earlier versions' lock, and a log a killed writer left: DuckDB would replay it on the new copy.
        for stale in (".lock", ".wal"):
            self.path.with_name(self.path.name + stale).unlink(missing_ok=True)

    def _migrate(self, read_only: bool) -> None:
        """Bring the writer file to the code's schema (schema.py), once per process and file: a read-only
        look, then, for a file that is behind or new, the migrations under the writer lock, published. A
        reader never creates the file. Like _adopt_or_reset, never call it holding the writer lock."""
        found = _identity(self.writer.path)
        if (found is None and read_only) or (found is not None and _CURRENT.get(self.writer.path) == found):
            return
        name = f"{self.writer.path} (the pipeline's file of the warehouse {self.path})"
        current = False
        if found is not None:
            with self.writer.connect(read_only=True) as con:
                current = schema.is_current(con, name)
        if not current:
            with self.writer.connect() as con:
                if schema.migrate(con, name):
                    con.execute("CHECKPOINT")
                    # a writer file is never left unpublished: _adopt_or_reset would take it for a deleted warehouse's
                    self._unpublished.touch()
            self.publish()
        _CURRENT[self.writer.path] = _identity(self.writer.path)

    def replace_table(self, table: str, rows: pa.Table) -> None:
        with self.transaction() as con:
            con.register("_rows", rows)
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM _rows')

    def replace_partition(self, table: str, keys: Mapping[str, str | None], rows: pa.Table) -> None:
        """Delete this partition's rows and insert the new ones, in one transaction."""
        with self.transaction() as con:
            replace_rows(con, table, keys, rows)


def copy_database(source: Path, target: Path, keep: Callable[[str], bool] = lambda name: True) -> None:
    """Write `source`'s committed tables and views whose name `keep` accepts to a new DuckDB file
    `target`, synced. `source` is opened read-only: a write-ahead log a killed writer left is read,
    not applied to it."""
    Path(target).unlink(missing_ok=True)  # write_atomic's placeholder: DuckDB creates the file itself
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_quote(source)} AS source (READ_ONLY)")
        con.execute(f"ATTACH {_quote(target)} AS target (STORAGE_VERSION '{STORAGE_VERSION}')")
        con.execute("COPY FROM DATABASE source TO target (SCHEMA)")
        for kind, schema_name, name in con.execute(
            "SELECT 'TABLE', schema_name, table_name FROM duckdb_tables() WHERE database_name = 'source' "
            "UNION ALL SELECT 'VIEW', schema_name, view_name FROM duckdb_views() "
            "WHERE database_name = 'source' AND NOT internal"
        ).fetchall():
            qualified = f'"{schema_name}"."{name}"'
            if not keep(name):
                con.execute(f"DROP {kind} target.{qualified}")
            elif kind == "TABLE":
                con.execute(f"INSERT INTO target.{qualified} SELECT * FROM source.{qualified}")
        con.execute("DETACH target")
    finally:
        con.close()
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


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
    condition, params = matching(keys)
    con.execute(f'DELETE FROM "{table}" WHERE {condition}', params)
    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _rows')
    con.unregister("_rows")


def matching(columns: Mapping[str, object], alias: str | None = None) -> tuple[str, list]:
    """SQL condition and parameters selecting the rows with these column values, NULL-safe (a result
    key's reranker is NULL for most); `alias`: the table's name in the query."""
    prefix = f"{alias}." if alias else ""
    return " AND ".join(f'{prefix}"{c}" IS NOT DISTINCT FROM ?' for c in columns), list(columns.values())
