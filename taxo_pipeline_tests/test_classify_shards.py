"""Catalogue shards as Dagster partitions and runs, against the session SIE server (all-MiniLM-L6-v2):
`classify-products --dagster` (one run per shard in the
instance, kept shards start none), and the sensor watching TAXO_CATALOGUE (registers the shards, requests
runs for new or changed shards only, drops the partitions of a shorter catalogue, and rewrites only the
shard a new review matches); a shard run names a missing catalogue or a shard beyond it."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.classify.sensors import build_catalogue_shards_sensor
from taxo_pipeline.defs.resources import WorkspaceResource, pipeline_resources
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.classify_testkit import catalogue, evaluated_workspace, run_dir
from taxo_pipeline_tests.sie.sie_testkit import MINILM

ASSET = dg.AssetKey("catalogue_classifications")


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return root, evaluated_workspace(root, sie_server, test_catalogue)


@pytest.fixture
def env(evaluated, monkeypatch, tmp_path):
    root, environment = evaluated
    for name, value in {**environment, "DAGSTER_HOME": str(tmp_path / "dagster")}.items():
        monkeypatch.setenv(name, value)
    return root, environment


def _rows(environment, name):
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        return con.execute("SELECT count(*), count(DISTINCT product_id) FROM classifications WHERE catalogue = ?",
                           [name]).fetchone()  # fmt: skip


def test_classify_products_dagster_runs_one_partition_per_new_shard(env, tmp_path, capsys):
    _, environment = env
    path = catalogue(tmp_path / "dagster-cat.csv", 10)
    command = ["--products", str(path), "--shard-size", "4", "--chunk-size", "3", "--dagster"]
    assert classify_products(command) == 0
    assert "10 products in 3 shards; this run classified 10 products in shards [0, 1, 2]" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("catalogue_shard") == ["00000", "00001", "00002"]
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "00001"}))
        assert [r.dagster_run.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(ASSET, asset_partitions=["00002"]), limit=5).records
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert metadata["dagster/row_count"] == 2 and metadata["classified"] is True and metadata["skipped_products"] == 0
    assert (metadata["approach"], metadata["model"], metadata["variant"]) == ("title-description", MINILM, "full-depth")
    assert 0 < metadata["mean_confidence"] < 1
    assert metadata["path"].endswith(run_dir(path) + "/shard-00002.parquet")
    assert _rows(environment, catalogue_name(path)) == (10, 10)
    # nothing changed: every shard is kept and no run starts
    assert classify_products(command) == 0
    assert "classified 0 products in shards none, kept shards [0, 1, 2]" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_run_records()) == 3


def _tick(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": WorkspaceResource()})
    return build_catalogue_shards_sensor(Workspace.from_env())(context)


def _run(instance, request):
    result = dg.materialize([*defs.assets], selection=[ASSET], instance=instance, resources=pipeline_resources(),
                            partition_key=request.partition_key, run_config=request.run_config)  # fmt: skip
    assert result.success


def test_the_sensor_requests_runs_for_new_and_changed_shards_only(env, tmp_path, monkeypatch):
    _, environment = env
    monkeypatch.setenv("TAXO_SHARD_SIZE", "4")
    with dg.instance_for_test() as instance:
        assert _tick(instance).skip_reason.skip_message.endswith("TAXO_CATALOGUE is not set: no catalogue to classify")
        watched = catalogue(tmp_path / "watched.csv", 12)
        monkeypatch.setenv("TAXO_CATALOGUE", str(watched))
        first = _tick(instance)
        assert [r.partition_key for r in first.run_requests] == ["00000", "00001", "00002"]
        assert [(r.partitions_def_name, r.partition_keys) for r in first.dynamic_partitions_requests] == [
            ("catalogue_shard", ["00000", "00001", "00002"])]  # fmt: skip
        assert first.run_requests[0].run_config["ops"]["catalogue_classifications"]["config"]["shard_size"] == 4
        instance.add_dynamic_partitions("catalogue_shard", ["00000", "00001", "00002"])
        for request in first.run_requests:
            _run(instance, request)
        assert _rows(environment, catalogue_name(watched)) == (12, 12)
        assert _tick(instance, first.cursor).skip_reason.skip_message.endswith("unchanged since the last tick")
        # one row of shard 1 changes and the catalogue loses its last shard
        catalogue(tmp_path / "watched.csv", 8, changed=5)
        second = _tick(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["00001"]
        assert [(r.partitions_def_name, r.partition_keys) for r in second.dynamic_partitions_requests] == [
            ("catalogue_shard", ["00002"])]  # fmt: skip
        _run(instance, second.run_requests[0])
        materialized = {key: len(instance.fetch_materializations(
            dg.AssetRecordsFilter(ASSET, asset_partitions=[key]), limit=10).records) for key in ("00000", "00001")}  # fmt: skip
        assert materialized == {"00000": 1, "00001": 2}
        assert _rows(environment, catalogue_name(watched)) == (8, 8)
        with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
            written = con.execute("SELECT shard, min(classified_at) FROM classifications WHERE catalogue = ? "
                                  "GROUP BY shard ORDER BY shard", [catalogue_name(watched)]).fetchall()  # fmt: skip
        assert [shard for shard, _ in written] == [0, 1] and written[1][1] > written[0][1]  # shard 1 written again
        # a review of p0000 (shard 0) rewrites shard 0 alone: title-description does not learn from it
        reviewed = pl.read_csv(watched).head(1).with_columns(pl.lit("Luggage & Bags > Suitcases").alias("category"))
        reviewed.select("product_id", "category", "product_title", "product_description").write_csv(tmp_path / "c.csv")
        monkeypatch.setenv("TAXO_CORRECTIONS", str(tmp_path / "c.csv"))
        third = _tick(instance, second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["00000"]
        _run(instance, third.run_requests[0])
        (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(ASSET, asset_partitions=["00000"]), limit=1).records
        assert record.asset_materialization.metadata["reviewed_products"].value == 1


def _failure(instance, partition_key, run_config=None) -> str:
    result = dg.materialize([*defs.assets], selection=[ASSET], instance=instance, resources=pipeline_resources(),
                            partition_key=partition_key, run_config=run_config, raise_on_error=False)  # fmt: skip
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def test_a_shard_run_without_a_catalogue_or_beyond_it_names_what_is_wrong(env, tmp_path, monkeypatch):
    root, _ = env
    monkeypatch.delenv("TAXO_CATALOGUE", raising=False)
    path = catalogue(tmp_path / "short.csv", 3)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("catalogue_shard", ["00000", "00001"])
        assert _failure(instance, "00000").endswith(
            "no catalogue to classify: set TAXO_CATALOGUE or the run config's `products`")
        config = {"ops": {"catalogue_classifications": {"config": {"products": str(path)}}}}
        assert _failure(instance, "00001", config).endswith(
            f"products file {path} has 1 shards of 10000 products: shard 00001 is not one of them")
    assert not list((root / "data" / run_dir(path)).glob("shard-*"))
