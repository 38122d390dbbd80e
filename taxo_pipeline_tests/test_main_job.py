"""The main job (`taxo-pipeline materialize`), the model-partition sensor, and the definitions."""

import copy
import os
import subprocess
import sys

import dagster as dg
import duckdb

from taxo_pipeline.cli.main import main
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.models.sensors import model_partitions_sensor
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline.sie.catalogue import fingerprint, load_catalogue
from taxo_pipeline_tests.sie.sie_testkit import TINY_CLIP, TINY_NLI, write_catalogue


def only_enabled(tiny_catalogue_entries, path, *ids):
    entries = [{**entry, "enabled": model in ids} for model, entry in tiny_catalogue_entries.items()]
    return write_catalogue(path, entries)


def test_main_job_materializes_every_enabled_partition_and_prints_the_results(
    workspace, sie_env, tiny_catalogue_entries, monkeypatch, capsys
):
    # tiny/clip is the only enabled encoder (fast); tiny/nli is enabled but is not an encoder
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, workspace / "models.yaml", TINY_CLIP, TINY_NLI)))
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    assert main(["materialize"]) == 0
    printed = capsys.readouterr().out

    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        partitions = con.execute(
            "SELECT approach, model, variant, count(*), max(count) FROM metrics GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        board_rows = con.execute("SELECT count(*) FROM leaderboard WHERE model = ?", [TINY_CLIP]).fetchone()[0]
    approaches = ["hierarchical-cascade", "label-transfer", "score-fusion", "text-retrieval", "title-description"]
    # every retrieval approach for both variants, 8 rows each; the sample has no images, so image
    # retrieval ran for tiny/clip but left no figures
    assert partitions == sorted(
        [("nli", TINY_NLI, "l1", 2, 260)]
        + [(approach, TINY_CLIP, variant, 8, 260) for approach in approaches for variant in ("full-path", "leaf", "full-depth")]
    )
    assert printed.count(TINY_CLIP) == board_rows == 10 and printed.count(TINY_NLI) == 1
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.is_success for r in runs)  # the data assets, then one run per partition
        assert instance.get_dynamic_partitions("encoder_model") == [TINY_CLIP]
        assert instance.get_dynamic_partitions("nli_model") == [TINY_NLI]

    # nothing changed: no run, no server (a server URL nothing listens on would fail any model call)
    monkeypatch.setenv("SIE_BASE_URL", "http://127.0.0.1:9")
    assert main(["materialize"]) == 0
    assert capsys.readouterr().out == printed
    assert len(runs_so_far()) == 4

    # tiny/nli gets a new hypothesis template: its partition alone runs again
    monkeypatch.setenv("SIE_BASE_URL", sie_env)
    entries = {**tiny_catalogue_entries}
    entries[TINY_NLI] = copy.deepcopy(entries[TINY_NLI])
    entries[TINY_NLI]["server"]["profiles"]["default"]["adapter_options"]["runtime"]["hypothesis_template"] = "It is {}."
    write_catalogue(workspace / "models.yaml", [{**e, "enabled": m in (TINY_CLIP, TINY_NLI)} for m, e in entries.items()])
    assert main(["materialize"]) == 0
    new_runs = runs_so_far()[:-4]
    assert [r.tags.get("dagster/partition") for r in new_runs] == [TINY_NLI] and new_runs[0].is_success

    # tiny/nli disabled: it leaves the partitions, its results stay in the warehouse and the leaderboard
    write_catalogue(workspace / "models.yaml", [{**e, "enabled": m == TINY_CLIP} for m, e in entries.items()])
    monkeypatch.setenv("SIE_BASE_URL", "http://127.0.0.1:9")
    assert main(["materialize"]) == 0
    assert TINY_NLI in capsys.readouterr().out
    assert len(runs_so_far()) == 5
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("nli_model") == []


def runs_so_far() -> list:
    with dg.DagsterInstance.get() as instance:
        return instance.get_runs()  # newest first


def test_sensor_adds_partitions_and_records_fingerprints_once(tiny_catalogue_entries, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXO_MODELS", str(only_enabled(tiny_catalogue_entries, tmp_path / "models.yaml", TINY_CLIP)))
    with dg.instance_for_test() as instance:
        result = model_partitions_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [(r.partitions_def_name, r.partition_keys) for r in result.dynamic_partitions_requests] == [
            ("encoder_model", [TINY_CLIP])
        ]
        assert [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [
            ("encoder_model_fingerprint", TINY_CLIP)
        ]
        assert result.asset_events[0].tags["dagster/data_version"] == fingerprint(load_catalogue()[TINY_CLIP])
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
    assert "Validation successful" in completed.stderr + completed.stdout
    names = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert names == {
        "raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_l3", "taxonomy_full_depth", "products_experiment_l3",
        "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics",
        "image_retrieval_predictions", "image_retrieval_metrics", "nli_predictions", "nli_metrics",
        "reranking_predictions", "reranking_metrics", "title_description_retrieval", "score_fusion_retrieval",
        "hierarchical_cascade_retrieval", "label_transfer_retrieval",
        "encoder_model_fingerprint", "nli_model_fingerprint", "rerank_model_fingerprint",
    }  # fmt: skip
