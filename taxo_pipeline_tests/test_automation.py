"""Model changes drive reruns: the partition sensor, the fingerprint observations and the automation
(eager, code versions, what is missing), evaluated tick by tick without a daemon
(dg.evaluate_automation_conditions)."""

import copy
import shutil

import dagster as dg
import pytest
from dagster._core.definitions.observe import observe  # not exported at the top level in 1.13

from taxo_pipeline.definitions import build_sensors, defs
from taxo_pipeline.defs.feedback.corrections import corrections_observations
from taxo_pipeline.defs.ingest.refresh import DATA_JOB, WEEKLY_CRON, weekly_evaluation
from taxo_pipeline.defs.models.fingerprints import FINGERPRINT_SOURCES
from taxo_pipeline.defs.models.sensors import apply_model_sync, build_model_partitions_sensor, model_sync
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.defs.runner.automation import (
    dynamic_partitions_read_once,
    models_downstream,
    requested_runs,
    sie_assets,
)
from taxo_pipeline.sie.model_catalogue import fingerprint, load_catalogue
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP, TINY_CROSS_ENCODER, TINY_NLI, write_catalogue

DATA_ASSETS = {"raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
               "products_experiment"}  # fmt: skip
# An encoder's assets: per model x variant, and per model (the approaches that read both variants).
VARIANT_ASSETS = {
    "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics", "image_retrieval_predictions",
    "image_retrieval_metrics", "title_description_predictions", "title_description_metrics",
}  # fmt: skip
MODEL_ASSETS = {f"{a}_{s}" for a in ("score_fusion", "hierarchical_cascade", "label_transfer") for s in ("predictions", "metrics")}


def encoder_requests(*models: str, assets=VARIANT_ASSETS | MODEL_ASSETS) -> dict[str, set[str]]:
    """{asset: the partition keys of `models`} for an encoder's assets."""
    by_variant = {f"{m}|{v}" for m in models for v in ("full-path", "leaf", "full-depth")}
    return {asset: by_variant if asset in VARIANT_ASSETS else set(models) for asset in assets}


class Catalogue:
    """The test catalogue file, edited between ticks."""

    def __init__(self, entries: dict[str, dict], path, monkeypatch):
        self.entries, self.path = copy.deepcopy(entries), path
        monkeypatch.setenv("TAXO_MODELS", str(path))
        self.write()

    def write(self) -> None:
        write_catalogue(self.path, list(self.entries.values()))


def evaluate(instance: dg.DagsterInstance, cursor=None) -> dg.EvaluateAutomationConditionsResult:
    """One automation tick, as the command evaluates it."""
    with dynamic_partitions_read_once(instance):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


def active_catalogue():
    """The catalogue TAXO_MODELS names now, as the sensor reads it."""
    return load_catalogue(Workspace.from_env().settings.models)


def sync(instance: dg.DagsterInstance) -> None:
    """One tick of the partition sensor and of the corrections sensor, applied as the daemon applies them."""
    apply_model_sync(instance, model_sync(instance, active_catalogue(), Workspace.from_env()))
    for observation in corrections_observations(instance, Workspace.from_env()):
        instance.report_runless_asset_event(observation)


def materialize_everything(instance: dg.DagsterInstance) -> None:
    """Record a materialization of every partition of every asset, as if every run had happened."""
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        partitions_def = graph.get(key).partitions_def
        keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance) if partitions_def else [None]
        for partition in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def report(instance: dg.DagsterInstance, result) -> None:
    """Record a materialization of what an evaluation requested, as if its runs had succeeded."""
    for r in result.results:
        for asset_partition in r.true_subset.expensively_compute_asset_partitions():
            instance.report_runless_asset_event(dg.AssetMaterialization(r.key, partition=asset_partition.partition_key))


def requested(result) -> dict[str, set[str]]:
    """{asset: requested partition keys} of one evaluation."""
    return {
        r.key.to_user_string(): {str(k.partition_key) for k in r.true_subset.expensively_compute_asset_partitions()}
        for r in result.results
        if r.true_subset.size
    }


@pytest.fixture
def steady(tiny_catalogue_entries, tmp_path, monkeypatch):
    """Every test model enabled, synced, every partition materialized, one evaluation done:
    (catalogue, instance, automation cursor)."""
    catalogue = Catalogue(tiny_catalogue_entries, tmp_path / "models.yaml", monkeypatch)
    with dg.instance_for_test() as instance:
        sync(instance)
        materialize_everything(instance)
        first = evaluate(instance)
        assert first.total_requested == 0  # everything is there: nothing to do
        yield catalogue, instance, first.cursor


def test_a_fresh_instance_starts_with_the_data_assets_then_what_reads_them(tiny_catalogue_entries, tmp_path, monkeypatch):
    Catalogue(tiny_catalogue_entries, tmp_path / "models.yaml", monkeypatch)
    with dg.instance_for_test() as instance:
        sync(instance)
        # nothing materialized yet: the data assets, one run's worth (each needs the one before)
        result = evaluate(instance)
        assert requested(result) == {asset: {"None"} for asset in DATA_ASSETS}
        report(instance, result)
        # then every partition that reads only them, once they exist
        result = evaluate(instance, cursor=result.cursor)
        assert requested(result) == {
            **encoder_requests(MINILM, TINY_CLIP, assets=VARIANT_ASSETS),
            "nli_predictions": {TINY_NLI},
            "nli_metrics": {TINY_NLI},
        }
        report(instance, result)
        # then what reads the category index of both variants, and the reranking of each retriever's candidates
        result = evaluate(instance, cursor=result.cursor)
        reranking = {f"{TINY_CROSS_ENCODER}|{m}" for m in (MINILM, TINY_CLIP)}
        assert requested(result) == {
            **encoder_requests(MINILM, TINY_CLIP, assets=MODEL_ASSETS),
            "reranking_predictions": reranking,
            "reranking_metrics": reranking,
        }
        report(instance, result)
        assert evaluate(instance, cursor=result.cursor).total_requested == 0


def test_changing_one_model_reruns_only_its_partitions_and_no_change_reruns_nothing(steady):
    catalogue, instance, cursor = steady
    sync(instance)
    unchanged = evaluate(instance, cursor=cursor)
    assert unchanged.total_requested == 0

    # a new runtime option for MiniLM: a different model as far as results go
    catalogue.entries[MINILM]["server"]["max_sequence_length"] = 128
    catalogue.write()
    changes = model_sync(instance, active_catalogue(), Workspace.from_env())
    assert [(o.asset_key.to_user_string(), o.partition) for o in changes.observations] == [
        ("encoder_model_fingerprint", MINILM)
    ]
    apply_model_sync(instance, changes)
    result = evaluate(instance, cursor=unchanged.cursor)
    assert requested(result) == encoder_requests(MINILM)

    # MiniLM's text-retrieval predictions were rerun: the reranking that reads them follows, nothing else
    report(instance, result)
    result = evaluate(instance, cursor=result.cursor)
    reranking = {f"{TINY_CROSS_ENCODER}|{MINILM}"}  # reranker|retriever
    assert requested(result) == {"reranking_predictions": reranking, "reranking_metrics": reranking}

    sync(instance)  # nothing changed since
    for asset in ("reranking_predictions", "reranking_metrics"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=next(iter(reranking))))
    result = evaluate(instance, cursor=result.cursor)
    result = evaluate(instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_the_main_job_serves_only_the_models_its_requested_runs_and_their_downstream_call(steady):
    catalogue, instance, cursor = steady
    graph, sie_keys = defs.resolve_asset_graph(), sie_assets(defs)
    catalogue.entries[MINILM]["server"]["max_sequence_length"] = 128
    catalogue.entries[TINY_NLI]["server"]["max_sequence_length"] = 128
    catalogue.write()
    sync(instance)
    runs = requested_runs(graph, evaluate(instance, cursor=cursor), sie_keys)
    # one run per partition, each calling the model of its partition key
    assert [(run.partition_key, run.models) for run in runs] == [
        (f"{MINILM}|full-depth", {MINILM}), (f"{MINILM}|full-path", {MINILM}), (f"{MINILM}|leaf", {MINILM}),
        (MINILM, {MINILM}), (TINY_NLI, {TINY_NLI})
    ]  # fmt: skip
    # the reranking that reads MiniLM's candidates comes next: its reranker is served from the start
    assert models_downstream(instance, graph, runs, sie_keys) == {MINILM, TINY_NLI, TINY_CROSS_ENCODER}
    assert models_downstream(instance, graph, runs[4:], sie_keys) == {TINY_NLI}


def test_new_weight_files_rerun_the_model_but_moved_ones_do_not(steady, tiny_catalogue_entries, tmp_path):
    catalogue, instance, cursor = steady
    weights = tmp_path / "nli-weights"
    shutil.copytree(tiny_catalogue_entries[TINY_NLI]["weights"]["path"], weights)
    catalogue.entries[TINY_NLI]["weights"] = {"path": str(weights)}
    catalogue.write()
    sync(instance)  # the fingerprint hashes contents, not locations
    result = evaluate(instance, cursor=cursor)
    assert result.total_requested == 0

    with (weights / "config.json").open("a") as config:  # retrained weights, say
        config.write("\n")
    sync(instance)
    result = evaluate(instance, cursor=result.cursor)
    assert requested(result) == {"nli_predictions": {TINY_NLI}, "nli_metrics": {TINY_NLI}}


def test_enabling_a_model_runs_its_partitions_and_disabling_one_keeps_its_history(steady, tiny_catalogue_entries):
    catalogue, instance, cursor = steady
    catalogue.entries["tiny/clip-copy"] = {**copy.deepcopy(tiny_catalogue_entries[TINY_CLIP]), "id": "tiny/clip-copy"}
    catalogue.entries["tiny/clip-copy"]["server"]["sie_id"] = "tiny/clip-copy"
    catalogue.write()
    sync(instance)
    assert "tiny/clip-copy" in instance.get_dynamic_partitions("encoder_model")
    result = evaluate(instance, cursor=cursor)
    # what reads both variants' category index follows once it exists
    assert requested(result) == encoder_requests("tiny/clip-copy", assets=VARIANT_ASSETS)

    catalogue.entries[TINY_CLIP]["enabled"] = False
    catalogue.write()
    tick = build_model_partitions_sensor(Workspace.from_env())
    sensor = tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert [(type(r).__name__, r.partitions_def_name, list(r.partition_keys)) for r in sensor.dynamic_partitions_requests] == [
        ("DeleteDynamicPartitionsRequest", "encoder_model", [TINY_CLIP])
    ]
    sync(instance)
    assert TINY_CLIP not in instance.get_dynamic_partitions("encoder_model")
    result = evaluate(instance, cursor=result.cursor)
    assert not any(TINY_CLIP + "|" in key for keys in requested(result).values() for key in keys)
    # its materializations stay in the event log (and its rows in the warehouse)
    history = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("text_retrieval_metrics"), asset_partitions=[f"{TINY_CLIP}|leaf"]),
        limit=10,
    ).records
    assert len(history) == 1


def test_refreshed_data_reruns_every_partition_downstream(steady):
    _, instance, cursor = steady
    instance.report_runless_asset_event(dg.AssetMaterialization("products_experiment"))
    result = evaluate(instance, cursor=cursor)
    # category_embeddings only reads the taxonomy; reranking reads the data too, so it is requested with
    # the retrieval whose candidates it reranks (the main job runs it after, in upstream-first order)
    reranking = {f"{TINY_CROSS_ENCODER}|{m}" for m in (MINILM, TINY_CLIP)}
    assert requested(result) == {
        **encoder_requests(MINILM, TINY_CLIP, assets=(VARIANT_ASSETS | MODEL_ASSETS) - {"category_embeddings"}),
        "nli_predictions": {TINY_NLI},
        "nli_metrics": {TINY_NLI},
        "reranking_predictions": reranking,
        "reranking_metrics": reranking,
    }


def test_the_schedules_and_sensors_run_by_default():
    assert weekly_evaluation.cron_schedule == WEEKLY_CRON and weekly_evaluation.job_name == DATA_JOB
    assert weekly_evaluation.default_status == dg.DefaultScheduleStatus.RUNNING
    sensors = build_sensors(Workspace.from_env())
    assert {s.default_status for s in sensors} == {dg.DefaultSensorStatus.RUNNING}
    assert {s.name for s in defs.sensors} == {s.name for s in sensors} == {
        "evaluation_automation", "model_partitions_sensor", "catalogue_shards_sensor", "corrections_sensor"
    }


def test_observing_from_the_ui_records_what_the_sensor_records(steady):
    _, instance, cursor = steady
    result = observe([FINGERPRINT_SOURCES["encoder_model"]], instance=instance,
                     resources={"storage": WorkspaceResource()})  # "Observe sources" in the UI  # fmt: skip
    assert result.success
    for model in (MINILM, TINY_CLIP):
        (record,) = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("encoder_model_fingerprint"), asset_partitions=[model]), limit=1
        ).records
        assert record.asset_observation.tags["dagster/data_version"] == fingerprint(active_catalogue()[model])
    # the same versions as the sensor's: nothing to rerun
    assert evaluate(instance, cursor=cursor).total_requested == 0


def test_a_changed_corrections_file_reruns_only_label_transfer(steady, tmp_path, monkeypatch):
    _, instance, cursor = steady
    corrections, moved = tmp_path / "corrections.csv", tmp_path / "moved.csv"
    corrections.write_text("product_id,category,product_title,product_description\nr1,Animals & Pet Supplies,Leash,\n")
    label_transfer = encoder_requests(MINILM, TINY_CLIP, assets={"label_transfer_predictions", "label_transfer_metrics"})
    monkeypatch.setenv("TAXO_CORRECTIONS", str(corrections))  # set: label transfer's partitions rerun, nothing else
    sync(instance)
    result = evaluate(instance, cursor=cursor)
    assert requested(result) == label_transfer
    report(instance, result)
    moved.write_text(corrections.read_text())  # the same content elsewhere: no new version, nothing reruns
    monkeypatch.setenv("TAXO_CORRECTIONS", str(moved))
    assert corrections_observations(instance, Workspace.from_env()) == []
    result = evaluate(instance, cursor=result.cursor)
    assert result.total_requested == 0
    moved.write_text(moved.read_text() + "r2,Animals & Pet Supplies,Collar,\n")  # edited: label transfer again
    sync(instance)
    assert requested(evaluate(instance, cursor=result.cursor)) == label_transfer
