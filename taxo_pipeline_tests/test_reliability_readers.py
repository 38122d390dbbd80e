"""SQL at any time (issue 19): a reader process holding the warehouse open never blocks or fails a
write, a write never waits on it, and every answer is a whole committed result. Real processes on real
DuckDB files; the published copy is what TAXO_WAREHOUSE names, the pipeline writes a file beside it."""

import json
import os
import subprocess
import sys
import textwrap
import time

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline.warehouse.store import Warehouse, replace_rows
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS
from taxo_pipeline_tests.sie.sie_testkit import MINILM
from taxo_pipeline_tests.warehouse_testkit import version_rows, write_version

# Queries the published file in a loop until the stop file appears: `held`, on one connection opened at
# the start (a BI tool), or `fresh`, on a new connection each time (a notebook cell, the CLI). `check`
# (Python source taking the rows) names what is wrong with an answer, or returns None. Prints a JSON summary:
# queries, failures, wrong answers, and each distinct answer in order.
READER = """
import json, sys, time
from pathlib import Path
import duckdb
path, stop, mode, sql = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
check = eval(sys.argv[5])
held = duckdb.connect(path, read_only=True) if mode == "held" else None
print("ready", flush=True)
summary = {"queries": 0, "failures": [], "wrong": [], "answers": []}
while not stop.exists():
    try:
        # in one process a new connect() shares the open database, so `fresh` holds none between queries
        con = held or duckdb.connect(path, read_only=True)
        rows = con.execute(sql).fetchall()
        if con is not held:
            con.close()
    except Exception as exc:
        summary["failures"].append(repr(exc))
        continue
    summary["queries"] += 1
    if (problem := check(rows)) is not None:
        summary["wrong"].append(problem)
    answer = [list(r) for r in rows]
    if not summary["answers"] or summary["answers"][-1] != answer:
        summary["answers"].append(answer)
    time.sleep(0.005)
print(json.dumps(summary, default=str), flush=True)
"""


def start_readers(path, stop, sql: str, check: str) -> dict[str, subprocess.Popen]:
    """One `held` and one `fresh` reader process, both connected when this returns."""
    readers = {
        mode: subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop), mode, sql, check],
                               stdout=subprocess.PIPE, text=True)
        for mode in ("held", "fresh")
    }  # fmt: skip
    for reader in readers.values():
        assert reader.stdout.readline() == "ready\n"
    return readers


def stop_readers(readers: dict[str, subprocess.Popen], stop) -> dict[str, dict]:
    stop.touch()
    summaries = {}
    for mode, reader in readers.items():
        out, _ = reader.communicate(timeout=60)
        assert reader.returncode == 0
        summaries[mode] = json.loads(out)
    return summaries


# Writes its partitions at versions 1..N, each in one transaction, and counts failures and publishes.
WRITER = """
import json, logging, sys
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.warehouse_testkit import write_version
published = []
class Count(logging.Handler):
    def emit(self, record):
        published.append(record.getMessage().startswith("published"))
logging.getLogger("taxo_pipeline.warehouse").addHandler(Count())
logging.getLogger("taxo_pipeline.warehouse").setLevel(logging.DEBUG)
warehouse, keys, versions = Warehouse(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
failures = []
for version in range(1, versions + 1):
    for key in keys:
        try:
            write_version(warehouse, key, version)
        except Exception as exc:
            failures.append(repr(exc))
print(json.dumps({"failures": failures, "published": sum(published)}))
"""

WHOLE_PARTITIONS = """lambda rows: next((f"partial or mixed: {r}" for r in rows
                                         if not (r[1] == r[3] and r[2] == r[4] == 100 + r[1])), None)"""
PARTITIONS_SQL = """SELECT r.key, max(r.version), count(*), max(s.version), max(s.rows)
                    FROM results r JOIN summary s USING (key) GROUP BY r.key HAVING min(r.version) = max(r.version)
                    UNION ALL SELECT key, -1, count(*), -1, -1 FROM results GROUP BY key HAVING min(version) <> max(version)
                    ORDER BY 1"""


def test_a_reader_process_never_blocks_writer_processes_and_sees_only_whole_commits(tmp_path):
    published = tmp_path / "warehouse" / "taxo.duckdb"
    warehouse = Warehouse(published)
    keys = {"one": ["a0", "a1"], "two": ["b0", "b1"]}
    for key in keys["one"] + keys["two"]:
        write_version(warehouse, key, 0)
    stop, versions = tmp_path / "stop", 6
    readers, writers = start_readers(published, stop, PARTITIONS_SQL, WHOLE_PARTITIONS), []
    try:
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(published), ",".join(mine), str(versions)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "TAXO_LOCK_TIMEOUT_S": "60"})
            for mine in keys.values()
        ]  # fmt: skip
        outcomes = [json.loads(w.communicate(timeout=180)[0]) for w in writers]
    finally:
        for writer in writers:  # a writer stuck behind the reader (as before the published copy) is stopped
            writer.kill()
            writer.wait()
        summaries = stop_readers(readers, stop)
    assert [w.returncode for w in writers] == [0, 0]
    assert [o["failures"] for o in outcomes] == [[], []]
    held, fresh = summaries["held"], summaries["fresh"]
    for summary in (held, fresh):
        assert summary["failures"] == [] and summary["wrong"] == []
        assert summary["queries"] >= 10
    # The held connection kept its snapshot, version 0 everywhere, until it reconnects.
    assert held["answers"] == [[[k, 0, 100, 0, 100] for k in sorted(keys["one"] + keys["two"])]]
    seen = [{row[0]: row[1] for row in answer} for answer in fresh["answers"]]
    assert len(seen) >= 3  # new connections saw the writes as they were published
    for earlier, later in zip(seen, seen[1:]):  # versions only move forward
        assert all(later[k] >= earlier[k] for k in earlier)
    with duckdb.connect(str(published), read_only=True) as con:
        final = con.execute(PARTITIONS_SQL).fetchall()
    assert final == [(k, versions, 100 + versions, versions, 100 + versions) for k in sorted(keys["one"] + keys["two"])]
    # One copy may serve several commits; never more copies than commits.
    assert 1 <= sum(o["published"] for o in outcomes) <= 2 * 2 * versions


def _published_state(warehouse: Warehouse) -> tuple:
    stat = warehouse.path.stat()
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        rows = con.execute("SELECT key, version, count(*) FROM results GROUP BY ALL ORDER BY ALL").fetchall()
    return stat.st_ino, stat.st_mtime_ns, rows


def test_a_failed_transaction_publishes_nothing(tmp_path):
    warehouse = Warehouse(tmp_path / "taxo.duckdb")
    write_version(warehouse, "a", 1)
    before = _published_state(warehouse)
    assert before[2] == [("a", 1, 101)]
    with pytest.raises(RuntimeError, match="half-way"):
        with warehouse.transaction() as con:
            replace_rows(con, "results", {"key": "a"}, version_rows("a", 2)[0])
            raise RuntimeError("half-way")
    with pytest.raises(ValueError, match="lack partition key columns"):  # a failing statement, same outcome
        warehouse.replace_partition("results", {"key": "a", "other": "x"}, version_rows("a", 3)[0])
    assert _published_state(warehouse) == before  # the same file, untouched
    assert not warehouse.publish()  # nothing was left to publish
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".part", ".unpublished"))] == []
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT version, count(*) FROM results GROUP BY ALL").fetchall() == [(1, 101)]


def _duckdb_cli(path, sql: str) -> str:
    cli = os.path.join(os.path.dirname(sys.executable), "duckdb")  # the duckdb-cli package (dev group)
    completed = subprocess.run([cli, "-readonly", "-csv", "-noheader", str(path), "-c", sql],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_an_earlier_versions_warehouse_is_taken_over_once_keeping_everything(tmp_path):
    published = tmp_path / "taxo.duckdb"
    with duckdb.connect(str(published)) as con:  # as earlier versions wrote it: one read-write file
        con.execute("CREATE TABLE results AS SELECT 'a' AS key, 1 AS version, range AS value FROM range(5)")
        con.execute("CREATE VIEW result_count AS SELECT count(*) AS n FROM results")
        con.execute("CREATE TABLE embedding_cache (model VARCHAR, input_sha256 VARCHAR, vector FLOAT[])")
        con.execute("INSERT INTO embedding_cache VALUES ('m', 'h1', [0.6, 0.8]), ('m', 'h2', [1.0, 0.0])")
    (tmp_path / "taxo.duckdb.lock").touch()
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, os
        con = duckdb.connect({str(published)!r})
        con.execute("INSERT INTO results VALUES ('a', 1, 5)")
        os._exit(0)  # killed after the commit, before DuckDB folded its log into the file
        """)])  # fmt: skip
    assert killed.returncode == 0 and (tmp_path / "taxo.duckdb.wal").exists()
    reader = duckdb.connect(str(published), read_only=True)  # a reader of the old file, left open throughout

    warehouse = Warehouse(published)
    assert warehouse.table_exists("results")
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT n FROM result_count").fetchone() == (6,)
        assert "embedding_cache" not in {t for (t,) in con.execute("SHOW TABLES").fetchall()}
    with warehouse.cache.connect(read_only=True) as con:
        assert con.execute("SELECT input_sha256, vector FROM embedding_cache ORDER BY 1").fetchall() == [
            ("h1", [0.6000000238418579, 0.800000011920929]), ("h2", [1.0, 0.0])]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".taxo.cache.duckdb",
        ".taxo.cache.duckdb.lock",
        ".taxo.duckdb.publish.lock",
        ".taxo.writer.duckdb",
        ".taxo.writer.duckdb.lock",
        "taxo.duckdb",
    ]  # the old lock and log are gone: DuckDB would replay that log onto the new copy
    # The published copy: the results and views without the cache, readable by the duckdb CLI from PyPI.
    assert _duckdb_cli(published, "SELECT n FROM result_count") == "6"
    assert _duckdb_cli(published, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'embedding_cache'") == "0"
    assert reader.execute("SELECT count(*) FROM embedding_cache").fetchone() == (2,)  # still the old file
    reader.close()

    adopted = warehouse.writer.path.stat().st_mtime_ns
    warehouse.replace_table("results", pa.table({"key": ["b"], "version": [2], "value": [0]}))
    assert warehouse.writer.path.stat().st_mtime_ns != adopted
    assert Warehouse(published).table_exists("results")  # not taken over twice: the new rows stay
    assert _duckdb_cli(published, "SELECT n FROM result_count") == "1"


def test_deleting_the_published_warehouse_starts_a_new_one_and_keeps_the_cache(tmp_path):
    warehouse = Warehouse(tmp_path / "taxo.duckdb")
    write_version(warehouse, "a", 1)
    with warehouse.cache.transaction() as con:
        con.execute("CREATE TABLE embedding_cache AS SELECT 'h1' AS input_sha256")
    warehouse.path.unlink()  # as a user starting over
    assert not warehouse.table_exists("results")
    assert not Warehouse(tmp_path / "taxo.duckdb").table_exists("results")
    write_version(warehouse, "b", 2)
    assert _published_state(warehouse)[2] == [("b", 2, 102)]
    with warehouse.cache.connect(read_only=True) as con:
        assert con.execute("SELECT * FROM embedding_cache").fetchall() == [("h1",)]


SELECTION = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "products_experiment",
             "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]  # fmt: skip
# Per result key of MiniLM: the top-5 predictions of the 260 products, the metrics rows and the leaderboard's
# row. Whole states only: all 1,300 predictions, with all 8 metric rows or with none (rewritten predictions
# drop their key's metrics in the same commit, until the metrics step scores them), and the leaderboard's
# row throughout (it reads the published copy: the last whole result, evaluation/publication.py).
PIPELINE_SQL = f"""
    SELECT (SELECT count(*) FROM predictions WHERE model = '{MINILM}' AND variant = 'full-path'),
           (SELECT count(*) FROM metrics WHERE model = '{MINILM}' AND variant = 'full-path'),
           (SELECT count(*) FROM leaderboard WHERE model = '{MINILM}' AND variant = 'full-path')"""
WHOLE_RESULT = "lambda rows: None if rows in ([(1300, 8, 1)], [(1300, 0, 1)]) else rows"


def test_a_reader_process_holding_the_warehouse_never_fails_a_pipeline_rerun(sie_server, test_catalogue, taxonomy_file,
                                                                             tmp_path, monkeypatch):  # fmt: skip
    for name, value in {"TAXO_DATA_DIR": tmp_path / "data", "TAXO_WAREHOUSE": tmp_path / "warehouse.duckdb",
                        "TAXO_PRODUCTS": SAMPLE_PRODUCTS, "TAXO_TAXONOMY": taxonomy_file, "TAXO_MODELS": test_catalogue,
                        "SIE_BASE_URL": sie_server, "DAGSTER_HOME": tmp_path / "dagster_home"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    partition = dg.MultiPartitionKey({"model": MINILM, "variant": "full-path"})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("encoder_model", [MINILM])

        def materialize(selection) -> dg.ExecuteInProcessResult:
            return dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
                                  partition_key=partition, resources=pipeline_resources())  # fmt: skip

        assert materialize(SELECTION).success
        stop = tmp_path / "stop"
        readers = start_readers(tmp_path / "warehouse.duckdb", stop, PIPELINE_SQL, WHOLE_RESULT)
        try:
            started = time.monotonic()
            reruns = [materialize(["text_retrieval_predictions", "text_retrieval_metrics"]) for _ in range(2)]
            rerun_s = time.monotonic() - started
        finally:
            summaries = stop_readers(readers, stop)
    assert [r.success for r in reruns] == [True, True]
    for summary in summaries.values():
        assert summary["failures"] == [] and summary["wrong"] == []  # every answer a whole result
        assert summary["queries"] >= 10, (summary["queries"], rerun_s)
    assert summaries["held"]["answers"] == [[[1300, 8, 1]]]  # its snapshot, from before the reruns
    assert summaries["fresh"]["answers"][0] == [[1300, 8, 1]]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute(PIPELINE_SQL).fetchall() == [(1300, 8, 1)]  # the reruns' results, published
