"""The warehouse's schema version and the migrations that bring an older writer file to it.

`schema_version` holds a row per version the file reached: `version`, `migration` (what it changed)
and `applied_at`; the file is at its highest version. A warehouse written before versions existed has
no such table and is at version 0. The first connection a process makes (store.Warehouse) applies the
migrations the file lacks, in order, each in one transaction with its row, so a failure leaves the file
at the last version it completed. A new file starts at the latest version. A file at a version newer
than this code knows was written by a newer taxo-pipeline, and is refused rather than misread.

A migration names the tables as they were when it was written: later renames do not touch it, and
each one tolerates the tables it alters being absent (a warehouse that never computed them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import duckdb

from taxo_pipeline.errors import InputError

log = logging.getLogger(__name__)

TABLE = "schema_version"


class SchemaVersionError(InputError):
    """The warehouse was written by a newer taxo-pipeline than this one: the commands say so in one line."""


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()[0][0])


def _depth_columns(con: duckdb.DuckDBPyConnection) -> None:
    for table in ("metrics", "published_metrics", "datasets", "category_embeddings"):
        if _exists(con, table):
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS depth VARCHAR DEFAULT '3'")


def _calibration_column(con: duckdb.DuckDBPyConnection) -> None:
    for table in ("calibrations", "published_calibrations"):
        if _exists(con, table):
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS calibration VARCHAR")


_RENAMED = {"taxonomy_l3": "taxonomy_trimmed", "products_experiment_l3": "products_experiment"}


def _depth_neutral_names(con: duckdb.DuckDBPyConnection) -> None:
    for old, new in _RENAMED.items():
        if _exists(con, old):
            # a table under the new name was written since, by the code that renamed it: the old one is stale
            con.execute(f"DROP TABLE {old}" if _exists(con, new) else f"ALTER TABLE {old} RENAME TO {new}")
    # A view keeps the text it was created with, and DuckDB binds it when read: recreate those naming an old
    # table, each after the ones it reads (creating a view binds the views it reads).
    names = re.compile(r"\b(" + "|".join(_RENAMED) + r")\b")
    pending = {name: names.sub(lambda m: _RENAMED[m.group(1)], sql) for name, sql in con.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND NOT temporary "
        "AND database_name = current_database()"
    ).fetchall() if names.search(sql)}  # fmt: skip
    while pending:
        reads = {name: {other for other in pending if other != name and re.search(rf"\b{re.escape(other)}\b", sql)}
                 for name, sql in pending.items()}  # fmt: skip
        for name in [name for name in pending if not reads[name]] or list(pending):
            con.execute(re.sub(r"^CREATE VIEW\b", "CREATE OR REPLACE VIEW", pending.pop(name)))


# In order: version i + 1 is MIGRATIONS[i] applied. Append only; never edit one a warehouse may have applied.
MIGRATIONS: tuple[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]], ...] = (
    # rows from before TAXO_DEPTH are all at depth 3
    ("depth column on metrics, datasets and category_embeddings (3 for earlier rows)", _depth_columns),
    # calibrations from before the methods competed (issue 20): NULL, so their metrics asset fits them again
    ("calibration column on calibrations", _calibration_column),
    ("taxonomy_l3 -> taxonomy_trimmed, products_experiment_l3 -> products_experiment, and the views on them",
     _depth_neutral_names),
)  # fmt: skip
LATEST = len(MIGRATIONS)


def version(con: duckdb.DuckDBPyConnection) -> int:
    """The file's schema version: 0 for a warehouse from before versions (or an empty file)."""
    if not _exists(con, TABLE):
        return 0
    return con.execute(f"SELECT coalesce(max(version), 0) FROM {TABLE}").fetchall()[0][0]


def is_current(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the file is at LATEST; raises SchemaVersionError when it is newer. `name`: the file, for messages."""
    found = version(con)
    if found > LATEST:
        raise SchemaVersionError(
            f"{name} is at schema version {found}, but this taxo-pipeline knows versions up to {LATEST}: a newer "
            "taxo-pipeline wrote it. Run that version, or point TAXO_WAREHOUSE at another file."
        )
    return found == LATEST


def migrate(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Outside a transaction, holding the writer lock: bring the file to LATEST (a new, empty file
    straight there); returns whether it wrote anything."""
    if is_current(con, name):
        return False
    if _is_empty(con):
        _apply(con, LATEST, "created at the latest version", lambda con: None)
        return True
    for number in range(version(con) + 1, LATEST + 1):
        description, migration = MIGRATIONS[number - 1]
        log.warning("migrating %s to schema version %d: %s", name, number, description)
        _apply(con, number, description, migration)
    return True


def _is_empty(con: duckdb.DuckDBPyConnection) -> bool:
    """No table or view yet: nothing was written to the file."""
    (count,) = con.execute("SELECT (SELECT count(*) FROM duckdb_tables()) "
                           "+ (SELECT count(*) FROM duckdb_views() WHERE NOT internal)").fetchall()[0]  # fmt: skip
    return count == 0


def _apply(con: duckdb.DuckDBPyConnection, number: int, description: str,
           migration: Callable[[duckdb.DuckDBPyConnection], None]) -> None:  # fmt: skip
    """The migration and its row in `schema_version`, all or nothing."""
    con.begin()
    try:
        migration(con)
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER NOT NULL, migration VARCHAR NOT NULL, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
        con.execute(f"INSERT INTO {TABLE} (version, migration) VALUES (?, ?)", [number, description])
    except BaseException:
        con.rollback()
        raise
    con.commit()
