"""Through the real daemon (issue 12): with `taxo-pipeline dev` running (webserver, daemon and the SIE
server it shares), a model enabled in the catalogue, as a user does it, gets its partitions added by
the sensor and run by the automation, every run succeeds, and the dev server now serves the model.

Cheapest set-up: the data assets are materialized before `dev` starts, and only the tiny reranker is
enabled then (it has no partition without a retriever), so nothing runs until the tiny CLIP encoder is
enabled; its partitions (three variants, the fused approaches, reranking) are the only runs, each in one
process (TAXO_EXECUTOR=in_process)."""

import copy
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from taxo_pipeline import definitions
from taxo_pipeline.cli.common import materialize
from taxo_pipeline.definitions import run_executor
from taxo_pipeline.defs.ingest.assets import GROUP as DATA_GROUP
from taxo_pipeline.defs.runner.runs import DAGSTER_YAML
from taxo_pipeline.errors import InputError
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.local_process import free_port
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import TINY_CLIP, TINY_CROSS_ENCODER, write_catalogue
from taxo_pipeline_tests.test_webserver import failure_report

START_BOUND_S = 300  # the SIE server, then dagster dev, on a busy machine
RUNS_BOUND_S = 600  # sensor (60 s), automation and backfill ticks (30 s) between waves of runs, the runs
STOP_GRACE_S = 60
IN_PROGRESS = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}
EXPECTED_PARTITIONS = sorted(
    [
        TINY_CLIP,
        *(f"{TINY_CLIP}|{variant}" for variant in ("full-depth", "full-path", "leaf")),
        f"{TINY_CROSS_ENCODER}|{TINY_CLIP}",
    ]
)


def _dev_home(workspace: Path) -> Path:
    """The instance file the commands write, with at most two runs at once (peak memory on small CI)."""
    home = workspace / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(DAGSTER_YAML)
    config["run_queue"] = {"max_concurrent_runs": 2}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _start_dev(port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taxo_pipeline.cli.main", "dev", "-p", str(port)],
            cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _dev_sie_url(dev: subprocess.Popen, port: int, log: Path) -> str:
    """The dev SIE server's URL once the webserver answers too (both bounded by START_BOUND_S)."""
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        assert dev.poll() is None, f"taxo-pipeline dev exited with {dev.returncode}:\n{_tail(log)}"
        urls = re.findall(r"local SIE server ready on (http://127\.0\.0\.1:\d+)", log.read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                if urls:
                    return urls[0]
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"taxo-pipeline dev not up after {START_BOUND_S}s:\n{_tail(log)}")


def _stop(dev: subprocess.Popen) -> None:
    """Ctrl-C the group (dagster dev and its processes; `dev` then stops its SIE server), then harder."""
    for signum, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(dev.pid, signum)
        except ProcessLookupError:
            return
        try:
            dev.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _missing(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[str]:
    """The partitions of the enabled models' assets not materialized yet, as "asset partition"."""
    missing = []
    for asset in defs.resolve_asset_graph().assets_defs:
        if asset.partitions_def is None or not asset.is_materializable:  # fingerprints are observed
            continue
        for key in asset.keys:
            done = instance.get_materialized_partitions(key)
            wanted = asset.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            missing += [f"{key.to_user_string()} {p}" for p in wanted if p not in done]
    return missing


def _wait_for_the_runs(instance: dg.DagsterInstance, defs: dg.Definitions, log: Path) -> list[dg.DagsterRun]:
    """Every run, once the model's partitions exist, each is materialized and no run is left; fails at
    the first failed run, or after RUNS_BOUND_S, with the daemon's log tail."""
    deadline = time.monotonic() + RUNS_BOUND_S
    while True:
        runs = instance.get_runs()
        if failed := [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]:
            reports = "\n\n".join(
                f"run {r.run_id} {r.tags.get('dagster/partition')}: {failure_report(instance, r.run_id)}"
                for r in failed
            )
            pytest.fail(f"{reports}\n\ntaxo-pipeline dev log:\n{_tail(log)}")
        added = TINY_CLIP in instance.get_dynamic_partitions("encoder_model")  # by the sensor
        missing = _missing(instance, defs)
        if added and not missing and not any(r.status in IN_PROGRESS for r in runs):
            return runs
        if time.monotonic() > deadline:
            statuses = sorted((r.tags.get("dagster/partition", "-"), r.status.value) for r in runs)
            pytest.fail(
                f"not done after {RUNS_BOUND_S}s: partitions added {added}, runs {statuses}, not materialized {missing[:10]}"
                f"\n\ntaxo-pipeline dev log:\n{_tail(log)}"
            )
        time.sleep(5)


def test_a_model_enabled_while_dev_runs_is_served_and_its_partitions_run(
    workspace, tiny_catalogue_entries, monkeypatch
):
    catalogue = workspace / "models.yaml"
    entries = {m: copy.deepcopy(tiny_catalogue_entries[m]) for m in (TINY_CROSS_ENCODER, TINY_CLIP)}
    entries[TINY_CLIP]["enabled"] = False
    write_catalogue(catalogue, list(entries.values()))
    home = _dev_home(workspace)
    for name, value in {"TAXO_MODELS": catalogue, "DAGSTER_HOME": home, "TAXO_INDEX_DIR": workspace / "chroma"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("TAXO_EXECUTOR", "in_process")  # a process per run, not per step: a fraction of the CPU
    monkeypatch.setenv("TAXO_SENSOR_INTERVAL_S", "5")  # ticks of a few seconds instead of a minute
    monkeypatch.setenv("TAXO_AUTOMATION_INTERVAL_S", "5")
    monkeypatch.delenv("SIE_BASE_URL", raising=False)
    monkeypatch.delenv("SIE_API_KEY", raising=False)
    materialize(dg.AssetSelection.groups(DATA_GROUP), sie_url=None)  # as a previous `dev` session left them

    port, log = free_port(), workspace / "dev.log"
    dev = _start_dev(port, log)
    try:
        sie_url = _dev_sie_url(dev, port, log)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs_before = instance.get_runs()
            entries[TINY_CLIP]["enabled"] = True  # what a user does in models.yaml
            write_catalogue(catalogue, list(entries.values()))
            enabled_at = time.monotonic()
            runs = _wait_for_the_runs(instance, definitions.defs, log)
            print(
                f"the enabled model's {len(runs) - len(runs_before)} runs succeeded {time.monotonic() - enabled_at:.0f}s after"
            )
            assert instance.get_dynamic_partitions("encoder_model") == [TINY_CLIP]
        vector = InferenceClient(sie_url, SIESettings()).encode(TINY_CLIP, ["a straw hat"])
    finally:
        _stop(dev)

    model_runs = [r for r in runs if "dagster/partition" in r.tags]
    # nothing ran but the data assets' run from before `dev` started, and the new model's partitions
    assert [r.run_id for r in runs if r not in model_runs] == [r.run_id for r in runs_before]
    assert sorted({r.tags["dagster/partition"] for r in model_runs}) == EXPECTED_PARTITIONS
    assert {r.status for r in model_runs} == {dg.DagsterRunStatus.SUCCESS}
    assert all(r.tags.get("dagster/from_automation_condition") == "true" for r in model_runs)
    assert vector.shape == (1, 16)
    assert "dev SIE server: models added: tiny__clip" in log.read_text()


def test_the_run_executor_setting(monkeypatch):
    monkeypatch.setenv("TAXO_EXECUTOR", "in_process")
    assert run_executor(Workspace.from_env()) is dg.in_process_executor
    monkeypatch.delenv("TAXO_EXECUTOR")
    assert run_executor(Workspace.from_env()) is dg.multi_or_in_process_executor  # Dagster's default
    monkeypatch.setenv("TAXO_EXECUTOR", "threads")
    with pytest.raises(InputError, match="^bad setting\\(s\\): TAXO_EXECUTOR='threads': expected one of multiprocess, in_process$"):
        Workspace.from_env()  # as taxo_pipeline/definitions.py builds it
