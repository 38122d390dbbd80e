"""What readers see of the evaluation: the last *whole* result, never a rerun half-way.

A rerun rewrites a key's rows in steps: its predictions (which drop its metrics: they described other
predictions), then its metrics, then its calibration and held-out confidences; and a changed model or
product set reruns many keys, one partition at a time. Readers of the working tables in between see
half-states: a key without metrics leaves the leaderboard, another approach leads with old figures, a
calibration is paired with predictions it was not fitted on. So the working tables (`metrics`,
`calibrations`, `heldout_confidences`, `result_settings`, `predictions`) are copied to `published_*`
tables, in one transaction, only when every result on the current full dataset is whole (`publish`);
the leaderboard, classify-products and the service read the copies.

`result_settings` records, per result key, the catalogue fingerprint of the model settings its
predictions were computed with (written with the predictions), so a model change that reran only some
of the model's partitions is not whole, and the service can tell which settings a published result
belongs to. What the pipeline runs now, and those fingerprints, come from the caller (`Live`:
evaluation/publication.py builds it from the catalogue and the registry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from taxo_pipeline.evaluation.keys import KEY_COLUMNS, ResultKey
from taxo_pipeline.warehouse.embedding_cache import UNKNOWN_FINGERPRINT
from taxo_pipeline.warehouse.store import Warehouse, matching

log = logging.getLogger(__name__)

SETTINGS = "result_settings"  # per result key: model_fingerprint, written_at
# The working tables readers see only through their published copies.
PUBLISHED = ("metrics", "calibrations", "heldout_confidences", SETTINGS, "predictions")
# One row, present once results were published: the current full dataset they were whole on, and when.
PUBLICATION = "publication"

# The latest full evaluation table's fingerprint: results on it only are compared, so a --limit run or an
# older dataset never stands in for the current full evaluation. The working one moves as soon as a rerun
# on new products writes its first partition; the published one when that rerun is whole.
CURRENT_DATASET = "(SELECT dataset FROM datasets WHERE scope = 'full' ORDER BY recorded_at DESC LIMIT 1)"
PUBLISHED_DATASET = f"(SELECT dataset FROM {PUBLICATION})"

_KEY = ", ".join(f'"{c}"' for c in KEY_COLUMNS)


def published(table: str) -> str:
    return f"published_{table}"


@dataclass(frozen=True)
class Live:
    """What the pipeline runs now. Only its keys hold publication back: another key (a disabled model's,
    an approach no longer registered) never completes a rerun."""

    approaches: frozenset[str]  # the registered approaches' names
    models: frozenset[str]  # the enabled models
    # (model, reranker) -> the fingerprint of their settings now; None when it cannot be computed (a weights
    # package not installed: no run of that model completes either, so it cannot be judged)
    settings: Callable[[str, str | None], str | None]

    def runs(self, key: tuple) -> bool:
        """`key`: KEY_COLUMNS' values (approach, model, reranker, ...)."""
        approach, model, reranker = key[:3]
        return approach in self.approaches and model in self.models and (reranker is None or reranker in self.models)


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def source(con: duckdb.DuckDBPyConnection, table: str, published_copy: bool = True) -> str | None:
    """The table a reader reads for `table` (one of PUBLISHED): its published copy once results were
    published, else (a warehouse from before publication, or nothing scored yet) the working table
    itself, which `published_copy=False` asks for; None when that does not exist (nothing of the kind
    stored)."""
    tables = _tables(con)
    name = published(table) if published_copy and PUBLICATION in tables else table
    return name if name in tables else None


def current_dataset(con: duckdb.DuckDBPyConnection) -> str:
    """SQL for the dataset readers compare results on, to go with `source`."""
    return PUBLISHED_DATASET if PUBLICATION in _tables(con) else CURRENT_DATASET


def _same_key(a: str, b: str) -> str:
    return " AND ".join(f'{a}."{c}" IS NOT DISTINCT FROM {b}."{c}"' for c in KEY_COLUMNS)


def _incomplete(con: duckdb.DuckDBPyConnection, tables: set[str]) -> list[tuple]:
    """Keys (any dataset) whose working rows are a rerun half-way: predictions without metrics, or path
    metrics (hierarchical) without a calibration fitted at or after them."""
    if "predictions" not in tables:
        return []
    metrics = "metrics" in tables
    unscored = f"NOT EXISTS (SELECT 1 FROM metrics m WHERE {_same_key('m', 'p')})" if metrics else "TRUE"
    keys = con.execute(f"SELECT DISTINCT {_KEY} FROM predictions p WHERE {unscored}").fetchall()
    if metrics:
        fitted = (f"SELECT 1 FROM calibrations c WHERE {_same_key('c', 'm')} AND c.fitted_at >= m.computed_at"
                  if "calibrations" in tables else "SELECT 1 WHERE FALSE")  # fmt: skip
        keys += con.execute(f"""
            WITH m AS (SELECT {_KEY}, max(computed_at) AS computed_at FROM metrics WHERE scope = 'hierarchical'
                       GROUP BY ALL)
            SELECT {_KEY} FROM m WHERE NOT EXISTS ({fitted})""").fetchall()  # fmt: skip
    return sorted(set(keys), key=str)


def _backfill_settings(con: duckdb.DuckDBPyConnection, live: Live, tables: set[str]) -> None:
    """A warehouse from before settings were recorded, publishing for the first time: its stored results
    were computed with the models' settings as they are now (the automation reruns a changed model), so
    they are recorded as such; from now on the predictions' writes record them."""
    if "predictions" not in tables:
        return
    missing = f"WHERE NOT EXISTS (SELECT 1 FROM {SETTINGS} s WHERE {_same_key('s', 'p')})" if SETTINGS in tables else ""
    keys = con.execute(f"SELECT DISTINCT {_KEY} FROM predictions p {missing}").fetchall()
    if keys:
        record(con, settings_rows(keys, [live.settings(k[1], k[2]) or UNKNOWN_FINGERPRINT for k in keys]))


def settings_rows(keys: list[tuple], fingerprints: list[str]) -> pa.Table:
    """`result_settings` rows: each key (KEY_COLUMNS' values) with the settings fingerprint its predictions
    were computed with."""
    return pa.table({
        **{c: pa.array([k[i] for k in keys], pa.string()) for i, c in enumerate(KEY_COLUMNS)},
        "model_fingerprint": pa.array(fingerprints, pa.string()),
        "written_at": pa.array([datetime.now(UTC)] * len(keys), pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


def record(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Inside the caller's transaction (results.write_results', with the predictions): replace the settings
    rows of the keys in `rows` (settings_rows)."""
    con.register("_settings", rows)
    con.execute(f"CREATE TABLE IF NOT EXISTS {SETTINGS} AS SELECT * FROM _settings LIMIT 0")
    con.execute(f"DELETE FROM {SETTINGS} s WHERE EXISTS (SELECT 1 FROM _settings p WHERE {_same_key('s', 'p')})")
    con.execute(f"INSERT INTO {SETTINGS} BY NAME SELECT * FROM _settings")
    con.unregister("_settings")


def whole(con: duckdb.DuckDBPyConnection, live: Live) -> tuple[bool, list[tuple]]:
    """Whether the working results on the current full dataset are whole, and the keys (any dataset) still
    half-way, whose published rows stay as they are. Whole: no key the pipeline runs now (`live`) is
    half-way there (_incomplete); each has the fingerprint of its models' current settings recorded;
    and every such key published on the last published dataset exists again on the current one (a rerun
    of new products or of a changed model that has run some partitions only is not whole)."""
    tables = _tables(con)
    if "datasets" not in tables:
        return True, []  # nothing computed on an evaluation table yet: whatever is stored is whole
    # fetchall throughout: a result left unfinished blocks a later register() on this connection
    [(dataset,)] = con.execute(f"SELECT {CURRENT_DATASET}").fetchall()
    incomplete = _incomplete(con, tables)
    if half := [k for k in incomplete if k[4] == dataset and live.runs(k)]:
        log.info(f"results not published yet: {len(half)} half-way (scored or calibrated later), e.g. {half[0][:4]}")
        return False, incomplete
    # (c) each live key's recorded settings are the catalogue's now
    results = [f"SELECT {_KEY} FROM {t} WHERE dataset = ?" for t in ("predictions", "metrics") if t in tables]
    keys = con.execute(" UNION ".join(results), [dataset] * len(results)).fetchall() if results else []
    recorded = {}
    if SETTINGS in tables:
        recorded = {k[:5]: k[5] for k in con.execute(f"SELECT {_KEY}, model_fingerprint FROM {SETTINGS}").fetchall()}
    expected: dict[tuple, str | None] = {}
    for key in filter(live.runs, keys):
        models = (key[1], key[2])
        if models not in expected:
            expected[models] = live.settings(*models)
        if expected[models] is not None and recorded.get(key) != expected[models]:
            log.info(f"results not published yet: {key[:4]} was computed with other settings of its models")
            return False, incomplete
    # (d) what was published exists again on the current dataset (rerun, settings recorded)
    if PUBLICATION in tables and published("metrics") in tables:
        rerun = {k[:4] for k in recorded if k[4] == dataset}
        shown = con.execute(f"SELECT DISTINCT {_KEY} FROM {published('metrics')} WHERE dataset = {PUBLISHED_DATASET}")
        if missing := [k for k in shown.fetchall() if live.runs(k) and k[:4] not in rerun]:
            log.info(f"results not published yet: {len(missing)} published results not computed again on the "
                     f"current products, e.g. {missing[0][:4]}")  # fmt: skip
            return False, incomplete
    return True, incomplete


def publish(con: duckdb.DuckDBPyConnection, live: Live) -> bool:
    """Inside the caller's transaction: if the working results are whole, replace the published copies
    with them (the keys still half-way elsewhere keep their published rows); returns whether it did."""
    tables = _tables(con)
    if "metrics" not in tables:
        return False  # nothing scored yet: readers keep reading the working tables (there is nothing to see)
    if PUBLICATION not in tables:
        _backfill_settings(con, live, tables)  # first publication: an older warehouse's results
    is_whole, held_back = whole(con, live)
    if not is_whole:
        return False
    con.register("_held_back", pa.table({c: pa.array([k[i] for k in held_back], pa.string())
                                         for i, c in enumerate(KEY_COLUMNS)}))  # fmt: skip
    tables = _tables(con)
    for table in PUBLISHED:
        copy = published(table)
        if table not in tables:
            con.execute(f"DROP TABLE IF EXISTS {copy}")
            continue
        fresh = f"SELECT * FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM _held_back h WHERE {_same_key('t', 'h')})"
        kept = (f" UNION ALL BY NAME SELECT * FROM {copy} t WHERE EXISTS (SELECT 1 FROM _held_back h WHERE "
                f"{_same_key('t', 'h')})") if copy in tables else ""  # fmt: skip
        # through a temp table: the new copy reads the old one
        con.execute(f"CREATE OR REPLACE TEMP TABLE _copy AS {fresh}{kept}")
        con.execute(f"CREATE OR REPLACE TABLE {copy} AS SELECT * FROM _copy")
        con.execute("DROP TABLE _copy")
    con.unregister("_held_back")
    dataset = CURRENT_DATASET if "datasets" in tables else "NULL::VARCHAR"
    con.execute(f"CREATE OR REPLACE TABLE {PUBLICATION} AS SELECT {dataset} AS dataset, now() AS published_at")
    return True


def publish_if_whole(warehouse: Warehouse, live: Live) -> bool:
    """Publish the working results if they are whole (see `whole`), in one transaction."""
    with warehouse.transaction() as con:
        return publish(con, live)


def forget(con: duckdb.DuckDBPyConnection, condition: str, params: list) -> None:
    """Inside the caller's transaction: delete the rows matching `condition` from every published copy
    (clear_results: a key that no longer applies must not hold publication back)."""
    tables = _tables(con)
    for table in (published(t) for t in PUBLISHED):
        if table in tables:
            con.execute(f"DELETE FROM {table} WHERE {condition}", params)


@dataclass(frozen=True)
class PublishedState:
    """What identifies the published result of a key: a publication that replaced it changes these."""

    computed_at: datetime | None  # its metrics rows
    fitted_at: datetime | None  # its calibration row (None: an L1-only approach, or none stored)
    model_fingerprint: str | None  # the model settings its predictions were computed with
    # (evaluation/publication.settings_fingerprint; None: published before settings were recorded)


def published_state(warehouse: Warehouse, key: ResultKey) -> PublishedState:
    """When the key's published metrics and calibration were written and the model settings they belong
    to, read from one snapshot (a publication replaces all three together)."""
    condition, params = matching(key.columns)
    with warehouse.connect(read_only=True) as con:

        def latest(table: str, column: str) -> datetime | str | None:
            if (name := source(con, table)) is None:
                return None
            return con.execute(f"SELECT max({column}) FROM {name} WHERE {condition}", params).fetchone()[0]

        return PublishedState(latest("metrics", "computed_at"), latest("calibrations", "fitted_at"),
                              latest(SETTINGS, "model_fingerprint"))  # fmt: skip

