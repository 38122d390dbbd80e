"""The approach registry is the one place an approach is wired: a toy approach registered only through
TAXO_APPROACHES (taxo_pipeline_tests/toy_approach.py, no other edit) gets its assets, its job, its
eval command, its runs in the main job, its metrics rows and its leaderboard row."""

import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from taxo_pipeline.approaches.registry import approaches
from taxo_pipeline.approaches.spec import ClassifyRequest
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.metrics import evaluate_paths
from taxo_pipeline.settings import PROJECT_ROOT
from taxo_pipeline_tests import toy_approach
from taxo_pipeline_tests.sie.sie_testkit import TINY_CLIP, write_catalogue

TOY = toy_approach.APPROACH.name
LIST_DEFINITIONS = """
import json
from taxo_pipeline.definitions import defs
graph = defs.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "jobs": {job.name: sorted(k.to_user_string() for k in job.selection.resolve(graph)) for job in defs.jobs
             if hasattr(job, "selection")},
}))
"""


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_a_registered_approach_gets_assets_jobs_commands_runs_metrics_and_a_leaderboard_row(
    workspace, sie_env, tiny_catalogue_entries
):
    env = {**os.environ, "TAXO_APPROACHES": "taxo_pipeline_tests.toy_approach",
           "TAXO_MODELS": str(write_catalogue(workspace / "models.yaml", [
               {**entry, "enabled": model == TINY_CLIP} for model, entry in tiny_catalogue_entries.items()])),
           "DAGSTER_HOME": str(workspace / "dagster_home")}  # fmt: skip

    listed = run(["-c", LIST_DEFINITIONS], env)
    assert listed.returncode == 0, listed.stderr
    definitions = json.loads(listed.stdout.strip().splitlines()[-1])
    assert {"toy_title_words_predictions", "toy_title_words_metrics"} <= set(definitions["assets"])
    assert {"toy_title_words_predictions", "toy_title_words_metrics"} <= set(definitions["jobs"]["encoder_fusion_evaluation"])
    help_text = run(["-m", "taxo_pipeline.cli.main", "eval", TOY, "--help"], env)
    assert help_text.returncode == 0 and "--model" in help_text.stdout

    main_job = run(["-m", "taxo_pipeline.cli.main", "materialize"], env)
    assert main_job.returncode == 0, main_job.stderr[-3000:]
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        metrics = con.execute(
            "SELECT mode, f1, count, variant FROM metrics WHERE approach = ? AND scope = 'hierarchical' ORDER BY mode",
            [TOY],
        ).fetchall()
        board = con.execute("SELECT model, products, strict FROM leaderboard WHERE approach = ?", [TOY]).fetchall()
        products = con.sql("SELECT product_id, product_title, ground_truth_category, potential_product_categories "
                           "FROM products_experiment").pl()  # fmt: skip
        taxonomy = TrimmedTaxonomy(con.sql("SELECT path FROM taxonomy_trimmed ORDER BY path").pl()["path"].to_list())
    # the figures are the plain classifier's, recomputed here without Dagster or the warehouse
    toy = toy_approach.classify(ClassifyRequest(products, taxonomy, evidence=None, model=TINY_CLIP, variant="both",
                                                model_family="image"))  # fmt: skip
    expected = evaluate_paths([ranked[0][0] for ranked in toy.ranked], products["ground_truth_category"].to_list(),
                              products["potential_product_categories"].to_list())  # fmt: skip
    assert metrics == [
        ("lenient", pytest.approx(expected["lenient"]["hierarchical"]["f1"]), products.height, "both"),
        ("strict", pytest.approx(expected["strict"]["hierarchical"]["f1"]), products.height, "both"),
    ]
    assert board == [(TINY_CLIP, products.height, pytest.approx(expected["strict"]["hierarchical"]["f1"]))]
    assert "toy-title-words" in main_job.stdout  # the printed leaderboard


def test_a_toy_classifier_is_a_plain_function():
    taxonomy = TrimmedTaxonomy(["A", "A > Wool Hats", "A > Racks", "B", "B > Tents"])
    products = pl.DataFrame({"product_id": ["1", "2"], "product_title": ["Warm wool hats", "Dome tents x"]})
    ranked = toy_approach.classify(
        ClassifyRequest(products, taxonomy, evidence=None, model="m/x", variant="both", model_family="text", top_k=2)
    ).ranked
    assert ranked == [[("A > Wool Hats", 2.0), ("A", 0.0)], [("B > Tents", 1.0), ("A", 0.0)]]


def test_registry_rejects_unloadable_or_duplicate_approaches():
    with pytest.raises(InputError, match="cannot load APPROACH from module 'taxo_pipeline_tests.no_such_module'"):
        approaches(["taxo_pipeline_tests.no_such_module"])
    with pytest.raises(InputError, match="approach names must be unique; repeated: nli"):
        approaches(["taxo_pipeline.approaches.nli"])
