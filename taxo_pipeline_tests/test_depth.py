"""TAXO_DEPTH without a model: the setting, trimming, documents, indexes, cascade, metrics and result
tables at depths other than the reference's 3, and depth 3 exactly as before."""

import json
import os
import subprocess
import sys

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from taxo_pipeline import settings
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.dataset.trimming import trim_products
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.ingest.assets import code_version_at, depth_code_version
from taxo_pipeline.defs.location import location_workspace
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey, product_set_fingerprint
from taxo_pipeline.evaluation.metrics import evaluate_paths
from taxo_pipeline.evaluation.store import load_metrics, save_metrics, save_results
from taxo_pipeline.evaluation.tables import metric_rows
from taxo_pipeline.retrieval.cascade import Hierarchy, hard_cascade, node_scores, path_scores
from taxo_pipeline.retrieval.categories import category_documents
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.retrieval.full_depth import best_per_node, full_depth_documents
from taxo_pipeline.warehouse.results import dataset_depth
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.sie.sie_testkit import MINILM
from taxo_pipeline_tests.test_automation import VARIANT_ASSETS, encoder_requests, materialize_everything, sync
from taxo_pipeline_tests.warehouse_testkit import earlier_warehouse

# A tiny taxonomy five levels deep (every ancestor listed, as in Shopify's file).
CATEGORIES = ["A", "A > B", "A > B > C", "A > B > C > D", "A > B > C > D > E", "A > B > C > X", "G", "G > H"]
T1, P1 = "A > B > C > D > E", "A > B > C > X"
T2 = P2 = "A > B > C > D > E > F"
T3, P3 = "G > H", "A > B > C > D > E"


@pytest.mark.parametrize(
    ("value", "depth"), [(None, 3), ("", 3), ("3", 3), ("full", None), (" FULL ", None), ("5", 5), ("1", 1)]
)
def test_taxo_depth_is_3_by_default_full_or_a_number_of_levels(monkeypatch, value, depth):
    if value is None:
        monkeypatch.delenv("TAXO_DEPTH", raising=False)
    else:
        monkeypatch.setenv("TAXO_DEPTH", value)
    assert settings.current().depth == depth


@pytest.mark.parametrize("value", ["0", "-1", "deep", "3.5", "l3", "٣"])
def test_a_bad_taxo_depth_names_the_variable_and_the_allowed_values(monkeypatch, value):
    monkeypatch.setenv("TAXO_DEPTH", value)
    with pytest.raises(InputError) as raised:
        settings.current()
    assert str(raised.value) == (
        f"bad setting(s): TAXO_DEPTH={value!r} is not a taxonomy depth: expected 3 (the default), full, "
        "or a positive whole number of levels"
    )


def test_depth_3_keeps_the_reference_file_names_and_code_versions_others_get_their_own(monkeypatch):
    assert (settings.taxonomy_file(3), settings.experiment_file(3)) == (
        "shopify-taxonomy-l3.parquet", "shopify-products-experiment-l3.parquet")  # fmt: skip
    assert (settings.taxonomy_file(None), settings.experiment_file(None)) == (
        "shopify-taxonomy-full.parquet", "shopify-products-experiment-full.parquet")  # fmt: skip
    assert settings.taxonomy_file(5) == "shopify-taxonomy-l5.parquet"
    assert code_version_at("1", 3) == "1"  # an instance's recorded versions stay current at depth 3
    assert code_version_at("1", None) == "1+depth-full"  # a switch reruns the data assets, then what reads them
    assert code_version_at("1", 5) == "1+depth-5"
    # the definitions take the depth the code location loaded with
    assert depth_code_version("1") == code_version_at("1", location_workspace().depth)


def test_trimming_at_full_depth_keeps_every_level_and_at_4_cuts_there():
    full = TrimmedTaxonomy.from_categories(CATEGORIES, None)
    assert full.paths == sorted(CATEGORIES) and full.level_counts() == {1: 2, 2: 2, 3: 1, 4: 2, 5: 1}
    l4 = TrimmedTaxonomy.from_categories(CATEGORIES, 4)
    assert l4.paths == ["A", "A > B", "A > B > C", "A > B > C > D", P1, "G", "G > H"]
    clean = pl.DataFrame(
        {"product_id": ["1", "2"], "ground_truth_category": [T1, T3], "potential_product_categories": [[P1, T1, T1], []]}
    )
    trimmed = trim_products(clean, full)
    assert trimmed["ground_truth_category"].to_list() == [T1, T3]
    assert trimmed["potential_product_categories"].to_list() == [[P1, T1], []]
    assert trim_products(clean, l4)["ground_truth_category"].to_list() == ["A > B > C > D", T3]
    unknown = clean.with_columns(pl.Series("ground_truth_category", [T2, T3]))
    with pytest.raises(InputError, match=r"product 1: trimmed label\(s\) \['A > B > C > D > E > F'\] are not in the full taxonomy"):
        trim_products(unknown, full)


def test_documents_and_node_scores_at_full_depth_are_one_per_category():
    full = TrimmedTaxonomy.from_categories(CATEGORIES, None)
    assert category_documents(full, "leaf").documents == ["A", "B", "C", "D", "E", "X", "G", "H"]
    documents = full_depth_documents(CATEGORIES, full)
    scores = np.arange(8, dtype=float)[None, :]  # document i scores i
    # every document is its own node: the scores come back in taxonomy.paths (sorted) order
    expected = [float(CATEGORIES.index(p)) for p in full.paths]
    assert best_per_node(scores, documents.ids, full).tolist() == [expected]
    # at depth 3 the same documents fold into their L3 node: A > B > C takes the best of C, D, E, X (5)
    l3 = TrimmedTaxonomy.from_categories(CATEGORIES)
    assert best_per_node(scores, documents.ids, l3).tolist() == [[0.0, 1.0, 5.0, 6.0, 7.0]]


def test_the_cascade_decodes_five_levels():
    hierarchy = Hierarchy.from_paths(sorted(CATEGORIES))  # A, A>B, A>B>C, A>B>C>D, A>B>C>D>E, A>B>C>X, G, G>H
    assert hierarchy.depth.tolist() == [1, 2, 3, 4, 5, 4, 1, 2]
    own = np.array([[0.2, 0.2, 0.2, 0.2, 0.9, 0.5, 0.3, 0.3]])
    aggregated = node_scores(own, hierarchy)
    # subtree max: A..D 0.9 (E), E 0.9, X 0.5, G and H 0.3; aggregated = (own + max) / 2
    assert aggregated.tolist() == [[0.55, 0.55, 0.55, 0.55, 0.9, 0.5, 0.3, 0.3]]
    # path score of E: mean of A, A>B, A>B>C, A>B>C>D, E = (4 x 0.55 + 0.9) / 5 = 0.62; X: (3 x 0.55 + 0.5) / 4 = 0.5375
    soft = path_scores(aggregated, hierarchy)
    assert soft[0, 4] == pytest.approx(0.62) and soft[0, 5] == pytest.approx(0.5375)
    assert int(np.argmax(soft)) == 4
    assert hard_cascade(aggregated, hierarchy).tolist() == [4]  # A, then B, C, D (0.55 > X's 0.5), then E


def test_hierarchical_and_per_level_metrics_at_depth_6_by_hand():
    # A(P1) = {A, A>B, A>B>C, A>B>C>X}: 4, A(T1): 5, overlap 3 (A, A>B, A>B>C)
    # P2 = T2: 6 of 6/6; P3 (5 levels) vs T3 = G > H (2 levels): overlap 0
    # sums: overlap 9, predicted 4 + 6 + 5 = 15, relevant 5 + 6 + 2 = 13
    # hP = 9/15, hR = 9/13, hF1 = 2 (81/195) / (252/195) = 162/252 = 9/14
    # macro F1 per level (labels: the union; references shorter than the level skipped, shorter predictions null):
    #   L1: A tp 2 fp 1 -> p 2/3 r 1 f 0.8; G fn 1 -> 0;                      mean (0.8 + 0) / 2 = 0.4
    #   L2: A>B tp 2 fp 1 -> 0.8; G>H fn 1 -> 0;                                0.4
    #   L3: T3 skipped; A>B>C tp 2 -> 1;                                         1.0
    #   L4: A>B>C>D tp 1 fn 1 -> p 1 r 1/2 f 2/3; A>B>C>X fp 1 -> 0;            (2/3) / 2 = 1/3
    #   L5: P1 has 4 levels (null); A>B>C>D>E tp 1 fn 1 -> 2/3;                  2/3
    #   L6: only T2 reaches it; tp 1 -> 1;                                        1.0
    # lenient: T3's potential P3 is the prediction, so its reference is P3: overlap 5, predicted 5, relevant 5
    #   sums 14 / 15 / 16: hP 14/15, hR 7/8, hF1 = 2 (98/120) / (217/120) = 196/217 = 28/31
    preds, truths, potentials = [P1, P2, P3], [T1, T2, T3], [[], [], [P3]]
    result = evaluate_paths(preds, truths, potentials, depth=None)
    strict, lenient = result["strict"], result["lenient"]
    assert strict["hierarchical"]["precision"] == pytest.approx(9 / 15)
    assert strict["hierarchical"]["recall"] == pytest.approx(9 / 13)
    assert strict["hierarchical"]["f1"] == pytest.approx(9 / 14)
    assert list(strict["macro"]) == ["l1", "l2", "l3", "l4", "l5", "l6"]
    assert [strict["macro"][f"l{k}"]["f1"] for k in range(1, 7)] == pytest.approx([0.4, 0.4, 1.0, 1 / 3, 2 / 3, 1.0])
    assert strict["macro"]["l1"]["precision"] == pytest.approx(1 / 3) and strict["macro"]["l1"]["recall"] == 0.5
    assert lenient["hierarchical"]["f1"] == pytest.approx(28 / 31)
    assert list(lenient["macro"]) == list(strict["macro"])
    # depth 5 scores levels 1..5; depth 3 the reference's l1..l3 only, whatever the labels' length
    assert list(evaluate_paths(preds, truths, potentials, depth=5)["strict"]["macro"]) == ["l1", "l2", "l3", "l4", "l5"]
    assert list(evaluate_paths(preds, truths, potentials)["strict"]["macro"]) == ["l1", "l2", "l3"]


def test_the_dataset_fingerprint_differs_between_depths_and_depth_3_keeps_its_value():
    products = pl.DataFrame({"product_id": ["1", "2"], "product_title": ["Straw hat", "Scarf"],
                             "product_description": ["A woven straw hat.", "Wool"],
                             "ground_truth_category": ["A > B > C", "A > B"]})  # fmt: skip
    assert product_set_fingerprint(products) == "30c31864ba08af46"  # the value before TAXO_DEPTH existed
    # no label is deeper than 3 levels here, yet full-depth results are another dataset
    fingerprints = {product_set_fingerprint(products, depth) for depth in (3, None, 5)}
    assert len(fingerprints) == 3


def test_each_depth_has_its_own_chroma_directory_and_collection(tmp_path):
    l3, full = TrimmedTaxonomy.from_categories(CATEGORIES), TrimmedTaxonomy.from_categories(CATEGORIES, None)
    indexes = {}
    for taxonomy in (l3, full):
        documents = category_documents(taxonomy, "full-path")
        index = CategoryIndex(tmp_path, "org__model", "full-path", taxonomy.depth)
        assert index.sync(documents, np.random.default_rng(0).random((len(documents.ids), 4)))
        indexes[taxonomy.depth] = index
    assert indexes[3].directory == tmp_path / "org__model" / "full-path"  # the reference's layout
    assert indexes[None].directory == tmp_path / "org__model" / "full-path-depth-full"
    assert (indexes[3].name, indexes[None].name) == ("org__model-full-path", "org__model-full-path-depth-full")
    assert (indexes[3].count(), indexes[None].count()) == (5, 8)  # neither replaced the other
    assert CategoryIndex(tmp_path, "org__model", "full-path", 3).scores(np.ones((1, 4)))[0] == l3.paths


def test_results_record_their_depth_and_an_older_warehouse_reads_as_depth_3(tmp_path):
    # a warehouse written before TAXO_DEPTH: metrics and datasets without a depth column (schema.py adds it)
    old = ResultKey("text-retrieval", "org/model", "full-path", dataset="old")
    result = evaluate_paths([T1], [T1], [[]])
    warehouse = earlier_warehouse(tmp_path / "taxo.duckdb", {
        "metrics": metric_rows(result, old, count=1),
        "datasets": pa.table({"dataset": ["old"], "products": [1], "scope": ["full"]}),
    })  # fmt: skip
    assert dataset_depth(warehouse, "old") == 3
    new = old.on("new")
    save_results(warehouse, new, ["1"], [[(P1, 0.9)]], {}, products=1, scope="full", depth=None, model_fingerprint="")
    save_metrics(warehouse, new, evaluate_paths([P1], [T1], [[]], None), 1, {"request_count": 0}, "zero-shot",
                 "hierarchical", None)  # fmt: skip
    assert dataset_depth(warehouse, "new") is None
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT dataset, depth FROM datasets ORDER BY 1").fetchall() == [("new", "full"), ("old", "3")]
        rows = con.execute("SELECT dataset, depth, count(*) FROM metrics GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("new", "full", 12), ("old", "3", 8)]  # 2 modes x (hF1 + L1..L5) next to 2 x (hF1 + L1..L3)
    assert list(load_metrics(warehouse, new)[0]["strict"]["macro"]) == ["l1", "l2", "l3", "l4", "l5"]


def test_a_fresh_warehouse_gets_the_depth_column_with_its_first_rows(tmp_path):
    warehouse = Warehouse(tmp_path / "taxo.duckdb")
    key = ResultKey("text-retrieval", "org/model", "full-path", dataset="fresh")
    assert save_results(warehouse, key, ["1"], [[(P1, 0.9)]], {}, products=1, scope="full", depth=5,
                        model_fingerprint="") == 1
    save_metrics(warehouse, key, evaluate_paths([P1], [T1], [[]], 5), 1, {"request_count": 0}, "zero-shot",
                 "hierarchical", 5)  # fmt: skip
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT DISTINCT depth FROM metrics UNION ALL SELECT depth FROM datasets").fetchall() == [
            ("5",), ("5",)]  # fmt: skip


# Evaluates the automation once more with the saved cursor, in a process whose definitions were loaded at
# the depth its environment says (code versions are fixed when the definitions load, as in `dagster dev`).
_NEXT_TICK = """
import json, sys
import dagster as dg
from taxo_pipeline.definitions import defs
from taxo_pipeline_tests.test_automation import requested
with dg.DagsterInstance.get() as instance:
    cursor = dg.deserialize_value(open(sys.argv[1]).read())
    print(json.dumps({k: sorted(v) for k, v in requested(dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor)).items()}))
"""


def test_switching_the_depth_reruns_what_it_touches_through_the_automation(tmp_path, monkeypatch):
    monkeypatch.delenv("TAXO_MODELS", raising=False)  # the packaged catalogue: MiniLM enabled
    monkeypatch.delenv("TAXO_DEPTH", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        sync(instance)
        materialize_everything(instance)
        steady = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert steady.total_requested == 0  # at depth 3 nothing is to do
        (tmp_path / "cursor").write_text(dg.serialize_value(steady.cursor))
    env = {**os.environ, "DAGSTER_HOME": str(home), "TAXO_DEPTH": "full"}
    done = subprocess.run([sys.executable, "-c", _NEXT_TICK, str(tmp_path / "cursor")], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    tick = {asset: set(keys) for asset, keys in json.loads(done.stdout.splitlines()[-1]).items()}
    # the depth-dependent data assets, every category index and what reads them alone in the same tick (eager);
    # the approaches that read several indexes follow on the next tick, once those ran
    assert tick == {"taxonomy_trimmed": {"None"}, "products_experiment": {"None"},
                    **encoder_requests(MINILM, assets=VARIANT_ASSETS)}  # fmt: skip
