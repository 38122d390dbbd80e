"""A Dagster instance on a real PostgreSQL server (pgserver's binaries, started by the test) configured by
deploy/dagster.yaml.example: four `classify-products --dagster --part I/4` processes, like four machines
sharing one instance and the session SIE server, each run their shard concurrently; and a shard run
SIGKILLed mid-way is redone, alone with the shards not written yet, by the next run."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pgserver
import psycopg2
import pytest

from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline_tests.classify_testkit import catalogue, evaluated_workspace, kill_after_shards, run_dir

EXAMPLE = PROJECT_ROOT / "deploy" / "dagster.yaml.example"


@pytest.fixture(scope="module")
def postgres_url():
    # A short directory: the server's Unix socket path must stay under ~100 characters. pgserver runs the
    # server as an unprivileged user when the tests run as root (as CI does).
    data = Path(tempfile.mkdtemp(prefix="taxo-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-shards")
    return root, evaluated_workspace(root, sie_server, test_catalogue)


@pytest.fixture
def instance_env(evaluated, postgres_url, tmp_path):
    """The workspace's environment with DAGSTER_HOME holding the example dagster.yaml, on a fresh database."""
    root, environment = evaluated
    database = f"taxo_{tmp_path.name.lower()}"[:60]
    server_url = postgres_url.replace("/postgres?", f"/{database}?")
    _create_database(postgres_url, database)
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(EXAMPLE, home / "dagster.yaml")
    return root, {**os.environ, **environment, "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": server_url}


def _create_database(url: str, name: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()


def _command(path, *extra):
    return [sys.executable, "-m", "taxo_pipeline.cli.classify", "--products", str(path), "--shard-size", "5",
            "--chunk-size", "5", "--dagster", *extra]  # fmt: skip


def _instance(env, monkeypatch) -> dg.DagsterInstance:
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", env["DAGSTER_POSTGRES_URL"])  # the example reads it from the environment
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _view(env, name):
    with duckdb.connect(env["TAXO_WAREHOUSE"], read_only=True) as con:
        return con.execute("SELECT count(*), count(DISTINCT product_id) FROM classifications WHERE catalogue = ?",
                           [name]).fetchone()  # fmt: skip


def test_four_concurrent_shard_runs_share_the_postgres_instance(instance_env, tmp_path, monkeypatch):
    _, env = instance_env
    path = catalogue(tmp_path / "four.csv", 20)
    parts = [subprocess.Popen(_command(path, "--part", f"{i}/4"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in parts]
    assert [p.returncode for p in parts] == [0, 0, 0, 0], [(out[-1000:], err[-1500:]) for out, err in outputs]
    assert sorted(re.search(r"classified 5 products in shards \[(\d)\]", out).group(1) for out, _ in outputs) == [
        "0", "1", "2", "3"]  # fmt: skip
    assert _view(env, catalogue_name(path)) == (20, 20)  # every product's row, once
    with _instance(env, monkeypatch) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_dynamic_partitions("catalogue_shard") == ["00000", "00001", "00002", "00003"]
        runs = instance.get_run_records()
        assert sorted((r.dagster_run.tags["dagster/partition"], r.dagster_run.status) for r in runs) == [
            (key, dg.DagsterRunStatus.SUCCESS) for key in ("00000", "00001", "00002", "00003")]  # fmt: skip


def test_a_killed_shard_run_is_redone_with_the_unwritten_shards_only(instance_env, tmp_path, monkeypatch):
    root, env = instance_env
    path = catalogue(tmp_path / "killed.csv", 60)
    shards = root / "data" / run_dir(path)
    written = kill_after_shards(_command(path), env, shards, 2)
    assert 2 <= len(written) < 12, "the run ended before it could be killed mid-way"
    again = subprocess.run(_command(path), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    redone = [i for i in range(12) if i not in written]
    assert f"this run classified {5 * len(redone)} products in shards {redone}, kept shards {written}" in again.stdout
    assert _view(env, catalogue_name(path)) == (60, 60)
    with _instance(env, monkeypatch) as instance:
        runs = [r.dagster_run for r in instance.get_run_records()]
    unfinished = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    # the next command marked the killed process's run FAILURE (defs/runner/launcher.py); its shard was redone
    assert [r.status for r in unfinished] in ([], [dg.DagsterRunStatus.FAILURE])
    succeeded = sorted(int(r.tags["dagster/partition"]) for r in runs if r.status == dg.DagsterRunStatus.SUCCESS)
    assert len(succeeded) == len(set(succeeded))  # no shard ran to success twice
    assert [i for i in succeeded if i in redone] == redone
