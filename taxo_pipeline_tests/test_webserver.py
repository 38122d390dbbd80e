"""Runs launched together, as from the Dagster UI: the real webserver launches four partitions of the
encoder job at once (each with the multiprocess executor), all writing one warehouse and one Chroma
root, and every run must succeed with its rows in the warehouse. Below it, the Chroma collision such
runs can hit (an index rebuilt while other processes query it), reproduced with plain processes."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
from dagster_graphql import DagsterGraphQLClient

from taxo_pipeline.approaches.spec import MODEL_VARIANT
from taxo_pipeline.cli.common import materialize
from taxo_pipeline.defs.evaluate.jobs import JOB_NAMES
from taxo_pipeline.defs.ingest.assets import GROUP as DATA_GROUP
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.local_process import free_port
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP

LIMIT, TOP_K = 40, 5
PARTITIONS = [(model, variant) for model in (MINILM, TINY_CLIP) for variant in ("full-path", "leaf")]
# Runs start straight from the webserver (no daemon, so the default-running sensors stay idle).
DAGSTER_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""
START_TIMEOUT_S, RUN_TIMEOUT_S, STOP_GRACE_S = 120, 900, 20
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def wait_until_up(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"dagster-webserver exited with {server.returncode}:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"dagster-webserver not up after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the whole group (the webserver, its code server and the runs' processes), then SIGKILL."""
    for signum, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            return
        try:
            server.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def failure_report(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's step errors (or run failure message), for the assertion message."""
    lines = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.is_step_failure:
            lines.append(f"{event.step_key}: {event.step_failure_data.error.to_string()}")
        elif event.event_type in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT) and record.level >= 40:
            lines.append(record.message or str(event.message))
    return "\n".join(lines) or "no step failure recorded"


def test_four_partition_runs_launched_together_from_the_webserver_all_succeed(workspace, sie_env, monkeypatch):
    home = workspace / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TAXO_INDEX_DIR", str(workspace / "chroma"))
    materialize(dg.AssetSelection.groups(DATA_GROUP), sie_url=sie_env)
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("encoder_model", [MINILM, TINY_CLIP])

    port, log = free_port(), workspace / "webserver.log"
    started = time.monotonic()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_up(server, port, log)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)

        def launch(partition: tuple[str, str]) -> str:
            model, variant = partition
            return DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
                JOB_NAMES[MODEL_VARIANT],
                asset_selection=["category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"],
                run_config={"ops": {"text_retrieval_predictions": {"config": {"limit": LIMIT, "top_k": TOP_K}}}},
                tags={
                    "dagster/partition": str(dg.MultiPartitionKey({"model": model, "variant": variant})),
                    "dagster/partition/model": model,
                    "dagster/partition/variant": variant,
                },
            )

        with ThreadPoolExecutor(len(PARTITIONS)) as pool:  # one client each: gql clients are not thread-safe
            run_ids = dict(zip(PARTITIONS, pool.map(launch, PARTITIONS)))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (statuses := {key: client.get_run_status(run_id) for key, run_id in run_ids.items()}) and not all(
            status in FINISHED for status in statuses.values()
        ):
            assert time.monotonic() < deadline, f"runs not finished after {RUN_TIMEOUT_S}s: {statuses}"
            time.sleep(2)
        failed = {key: failure_report(instance, run_ids[key]) for key, status in statuses.items() if status != dg.DagsterRunStatus.SUCCESS}
        assert not failed, "\n\n".join(f"run {run_ids[key]} for {key}: {statuses[key]}\n{report}" for key, report in failed.items())
    finally:
        stop(server)
    print(f"webserver up and four runs finished in {time.monotonic() - started:.0f}s")

    # the runs really overlapped, each with the multiprocess executor
    windows = sorted((record.start_time, record.end_time) for record in instance.get_run_records(dg.RunsFilter(run_ids=list(run_ids.values()))))
    assert all(end > windows[-1][0] for _, end in windows)
    for run_id in run_ids.values():
        assert any("multiprocess executor" in (record.message or "") for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT))

    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        metrics = con.execute(
            "SELECT model, variant, count(*), min(count), max(count) FROM metrics WHERE approach = 'text-retrieval' GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        predictions = con.execute(
            """SELECT model, variant, count(DISTINCT product_id), count(*), min(rank), max(rank)
               FROM predictions WHERE approach = 'text-retrieval' GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        (categories,) = con.execute("SELECT count(*) FROM taxonomy_trimmed").fetchone()
        embedded = con.execute("SELECT model, variant, count(*) FROM category_embeddings GROUP BY ALL ORDER BY ALL").fetchall()
    # strict/lenient x hierarchical and macro L1/L2/L3 over the LIMIT products, top-k rows for each product
    assert metrics == sorted((model, variant, 8, LIMIT, LIMIT) for model, variant in PARTITIONS)
    assert predictions == sorted((model, variant, LIMIT, LIMIT * TOP_K, 1, TOP_K) for model, variant in PARTITIONS)
    assert embedded == sorted((model, variant, categories) for model, variant in PARTITIONS)


CHROMA_REBUILD_AND_QUERY = """
import json, multiprocessing as mp, sys
from pathlib import Path
import numpy as np
from taxo_pipeline.retrieval.categories import CategoryDocuments
from taxo_pipeline.retrieval.chroma_index import CategoryIndex

CATEGORIES, DIM, TOP_K = 1800, 384, 5

def rebuild(root, rebuilds, done):
    ids = [f"category {i}" for i in range(CATEGORIES)]
    categories = CategoryDocuments(ids=ids, documents=ids, levels=[3] * CATEGORIES)
    for _ in range(rebuilds):
        CategoryIndex(Path(root), "org__model", "full-path").sync(categories, np.random.rand(CATEGORIES, DIM), force=True)
    done.set()

def query(root, done, results):
    queries, errors = 0, []
    while not done.is_set() or not queries:
        try:
            index = CategoryIndex(Path(root), "org__model", "full-path")
            if index.count():
                matches = index.query(np.random.rand(40, DIM), TOP_K)
                assert [len(m) for m in matches] == [TOP_K] * 40, f"short results: {[len(m) for m in matches][:5]}"
                queries += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    results.put({"queries": queries, "errors": errors[:3], "error_count": len(errors)})

if __name__ == "__main__":
    root, rebuilds, readers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context("spawn")
    done, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=rebuild, args=(root, rebuilds, done), daemon=True)]
    procs += [ctx.Process(target=query, args=(root, done, results), daemon=True) for _ in range(readers)]
    for p in procs:
        p.start()
    print(json.dumps([results.get(timeout=300) for _ in range(readers)]))
    for p in procs:
        p.join()
    sys.exit(procs[0].exitcode)
"""


def test_chroma_index_rebuilt_while_other_processes_query_it(tmp_path):
    # Without the index's file lock, readers get "Error creating hnsw segment reader: Nothing found on
    # disk", "Collection ... does not exist" or empty results while the collection is rebuilt.
    script = tmp_path / "chroma_rebuild_and_query.py"
    script.write_text(CHROMA_REBUILD_AND_QUERY)
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "chroma"), "4", "2"], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    readers = json.loads(completed.stdout.splitlines()[-1])
    assert [r["error_count"] for r in readers] == [0, 0], readers
    assert all(r["queries"] > 0 for r in readers)
