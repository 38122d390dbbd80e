"""One settings object: every environment variable read in one place, every bad value named at once."""

from pathlib import Path

import pytest

from taxo_pipeline import settings
from taxo_pipeline.errors import InputError
from taxo_pipeline.settings import PRODUCTS_URL, PROJECT_ROOT, TAXONOMY_URL, Settings

TAXO_PACKAGE = PROJECT_ROOT / "taxo_pipeline"


def test_the_defaults_with_an_empty_environment():
    s = Settings.from_env({})
    assert (s.data_dir, s.warehouse, s.index_dir, s.dagster_home) == (
        PROJECT_ROOT / "data", PROJECT_ROOT / "warehouse" / "taxo.duckdb", PROJECT_ROOT / "data" / "chroma",
        PROJECT_ROOT / ".dagster_home",
    )  # fmt: skip
    assert (s.products, s.taxonomy, s.products_given, s.taxonomy_given) == (PRODUCTS_URL, TAXONOMY_URL, False, False)
    assert (s.depth, s.models, s.approaches, s.max_text_chars) == (3, None, (), 32_768)
    assert (s.sie.base_url, s.sie.api_key, s.sie.device) == (None, None, "cpu")
    assert (s.sie.timeout_s, s.sie.connect_timeout_s, s.sie.provision_timeout_s, s.sie.start_timeout_s) == (
        300.0, 10.0, 600.0, 600.0,
    )  # fmt: skip
    assert (s.executor, s.lock_timeout_s, s.catalogue, s.shard_size, s.classify_chunk) == (
        "multiprocess", 300.0, None, 10_000, 2_048,
    )  # fmt: skip
    assert (s.sensor_interval_s, s.automation_interval_s, s.corrections) == (60, 30, None)


def test_every_variable_is_read(tmp_path):
    env = {
        "TAXO_DATA_DIR": str(tmp_path / "d"), "TAXO_WAREHOUSE": str(tmp_path / "w.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "home"), "TAXO_PRODUCTS": "p.jsonl", "TAXO_TAXONOMY": "t.txt",
        "TAXO_DEPTH": "full", "TAXO_MODELS": str(tmp_path / "m.yaml"), "TAXO_APPROACHES": " a.b , c ,",
        "TAXO_MAX_TEXT_CHARS": "500", "SIE_BASE_URL": "http://h:8080/", "SIE_API_KEY": "secret",
        "TAXO_SIE_DEVICE": "cuda", "TAXO_SIE_TIMEOUT_S": "45", "TAXO_SIE_CONNECT_TIMEOUT_S": "2.5",
        "TAXO_SIE_PROVISION_TIMEOUT_S": "120", "TAXO_SIE_START_TIMEOUT_S": "30", "TAXO_EXECUTOR": "in_process",
        "TAXO_LOCK_TIMEOUT_S": "0.5", "TAXO_CATALOGUE": "~/cat.csv", "TAXO_SHARD_SIZE": "500",
        "TAXO_CLASSIFY_CHUNK": "64", "TAXO_CORRECTIONS": str(tmp_path / "reviewed.csv"),
    }  # fmt: skip
    s = Settings.from_env(env)
    assert s.data_dir == tmp_path / "d" and s.index_dir == tmp_path / "d" / "chroma"  # follows the data dir
    assert (s.warehouse, s.dagster_home, s.models) == (tmp_path / "w.duckdb", tmp_path / "home", tmp_path / "m.yaml")
    assert (s.products, s.taxonomy, s.products_given, s.depth) == ("p.jsonl", "t.txt", True, None)
    assert (s.approaches, s.max_text_chars) == (("a.b", "c"), 500)
    assert (s.sie.base_url, s.sie.api_key, s.sie.device) == ("http://h:8080", "secret", "cuda")
    assert (s.sie.timeout_s, s.sie.connect_timeout_s, s.sie.provision_timeout_s, s.sie.start_timeout_s) == (
        45, 2.5, 120, 30,
    )  # fmt: skip
    assert (s.executor, s.lock_timeout_s, s.shard_size, s.classify_chunk) == ("in_process", 0.5, 500, 64)
    assert s.catalogue == Path("~/cat.csv").expanduser()
    assert s.corrections == tmp_path / "reviewed.csv"
    assert "secret" not in repr(s)


def test_every_bad_value_is_named_in_one_error():
    env = {"TAXO_MAX_TEXT_CHARS": "-3", "TAXO_SIE_TIMEOUT_S": "soon", "TAXO_EXECUTOR": "threads", "TAXO_SHARD_SIZE": "٣"}
    with pytest.raises(InputError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == (
        "bad setting(s): TAXO_MAX_TEXT_CHARS='-3': expected a positive whole number; "
        "TAXO_SIE_TIMEOUT_S='soon': expected a number of seconds greater than 0; "
        "TAXO_EXECUTOR='threads': expected one of multiprocess, in_process; "
        "TAXO_SHARD_SIZE='٣': expected a positive whole number"
    )


def test_current_follows_the_environment(monkeypatch):
    monkeypatch.setenv("TAXO_MAX_TEXT_CHARS", "500")
    assert settings.current().max_text_chars == 500
    monkeypatch.delenv("TAXO_MAX_TEXT_CHARS")
    assert settings.current().max_text_chars == 32_768


def test_only_the_settings_module_reads_the_environment():
    readers = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for path in sorted(TAXO_PACKAGE.rglob("*.py"))
        if path.name not in ("settings.py", "processes.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "os.environ" in line or "os.getenv" in line
    ]
    assert readers == []
    # processes.child_environment hands the environment whole to a child process (an SIE server, `dagster
    # dev`), which reads its own variables: it reads none itself
    uses = [line.strip() for line in (TAXO_PACKAGE / "processes.py").read_text().splitlines() if "os.environ" in line]
    assert uses == ["return {**os.environ, **overrides}"]
