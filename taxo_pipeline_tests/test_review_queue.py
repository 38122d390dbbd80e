"""Through the real pipeline (title-description, all-MiniLM-L6-v2 on the real SIE server, the sample on two
branches of the taxonomy): the metrics asset fills `calibrations`, `heldout_confidences` and the
`precision_at_coverage` view, and `classify-products --target-precision` flags the products below the
review threshold and lists them in `review_queue`."""

import json
import re

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from taxo_pipeline.classification.calibration import METHODS, deciles, ece
from taxo_pipeline.classification.coverage import coverage_table, held_out, review_threshold
from taxo_pipeline.classification.shards import catalogue_name, refresh_view
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.classify_testkit import catalogue, evaluated_workspace, run_dir
from taxo_pipeline_tests.sie.sie_testkit import MINILM


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    return root, evaluated_workspace(root, sie_server, test_catalogue)


def _key(warehouse: Warehouse) -> ResultKey:
    with warehouse.connect(read_only=True) as con:
        (dataset,) = con.execute("SELECT dataset FROM calibrations WHERE approach = 'title-description'").fetchone()
    return ResultKey("title-description", MINILM, "full-depth", None, dataset)


def test_the_metrics_asset_stores_the_calibration_and_precision_at_coverage(evaluated):
    _, environment = evaluated
    warehouse = Warehouse(environment["TAXO_WAREHOUSE"])
    key = _key(warehouse)
    with warehouse.connect(read_only=True) as con:
        method, products, accuracy, stored_ece, bins = con.execute(
            "SELECT method, products, accuracy, ece, reliability FROM calibrations WHERE approach = 'title-description'"
        ).fetchone()
        truths = dict(con.execute("SELECT product_id, ground_truth_category FROM products_experiment").fetchall())
        top1 = dict(con.execute("SELECT product_id, category FROM predictions WHERE rank = 1").fetchall())
        view = con.execute("SELECT threshold, products, coverage, precision_l1, precision_l2, precision_exact "
                           "FROM precision_at_coverage WHERE approach = 'title-description'").fetchall()  # fmt: skip
    assert method in METHODS and products == len(truths) > 0
    assert accuracy == pytest.approx(np.mean([top1[p] == t for p, t in truths.items()]))  # exact at L3
    confidence, correct = held_out(warehouse, key)
    assert len(confidence) == products and correct[:, 2].mean() == pytest.approx(accuracy)
    assert stored_ece == pytest.approx(ece(deciles(confidence, correct[:, 2]))) and len(json.loads(bins)) == 10
    expected = [tuple(r.values()) for r in coverage_table(confidence, correct)]
    assert [tuple(pytest.approx(v) for v in row) for row in view] == expected
    assert view[-1][1:3] == (products, 1.0) and view[-1][5] == pytest.approx(accuracy)  # the lowest: everyone


def test_classify_products_flags_the_products_below_the_review_threshold(evaluated, monkeypatch, tmp_path, capsys):
    root, environment = evaluated
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    warehouse = Warehouse(environment["TAXO_WAREHOUSE"])
    threshold = review_threshold(warehouse, _key(warehouse), 0.5)
    assert threshold is not None
    products = catalogue(tmp_path / "pets.csv", 30)
    # a catalogue without labels of its own cannot confirm the evaluation's calibration: all to review ...
    assert classify_products(["--products", str(products), "--target-precision", "0.5"]) == 0
    assert "every product goes to review, since this catalogue cannot confirm the calibration" in capsys.readouterr().err
    unconfirmed = pl.read_parquet(root / "data" / run_dir(products) / "shard-00000.parquet")
    assert unconfirmed["needs_review"].to_list() == [True] * 30
    # ... unless the user trusts it, for a catalogue like the evaluation's products
    assert classify_products(["--products", str(products), "--target-precision", "0.5", "--trust-evaluation"]) == 0
    printed = capsys.readouterr().out
    rows = pl.read_parquet(root / "data" / run_dir(products) / "shard-00000.parquet")
    assert rows["needs_review"].to_list() == [c < threshold for c in rows["confidence"].to_list()]
    share = np.mean([c >= threshold for c in rows["confidence"].to_list()])
    line = re.search(r"at confidence >= ([\d.]+): (\d+)% of products, expected precision ([\d.]+) \(target 0.50\)",
                     printed)  # fmt: skip
    assert line and float(line.group(1)) == pytest.approx(threshold, abs=0.005)
    assert int(line.group(2)) == round(100 * share)
    assert float(line.group(3)) >= 0.5
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        queue = con.execute("SELECT product_id, confidence, levels, category FROM review_queue WHERE catalogue = ?",
                            [catalogue_name(products)]).fetchall()
        described = con.execute("DESCRIBE classifications").fetchall()
    # the view before any run (the taxonomy asset creates it) has the same columns, with no row
    empty = Warehouse(tmp_path / "empty" / "taxo.duckdb")
    refresh_view(empty, tmp_path / "empty-data")
    with duckdb.connect(str(empty.path), read_only=True) as con:
        assert con.execute("DESCRIBE classifications").fetchall() == described
        assert con.execute("SELECT count(*) FROM classifications").fetchone() == (0,)
    flagged = rows.filter(pl.col("needs_review"))
    assert sorted(q[0] for q in queue) == sorted(flagged["product_id"].to_list())
    assert [q[1] for q in queue] == sorted(q[1] for q in queue)  # least confident first
    assert all(q[2] == len(q[3].split(" > ")) for q in queue)
    # without a target the run prints the thresholds of a few precisions and flags nothing
    assert classify_products(["--products", str(products)]) == 0
    assert re.search(r"(expected|reaches) precision 0.90", capsys.readouterr().out)
    again = pl.read_parquet(root / "data" / run_dir(products) / "shard-00000.parquet")
    assert again["needs_review"].null_count() == again.height


def test_a_dagster_shard_run_takes_the_target_precision_from_its_config(evaluated, monkeypatch, tmp_path):
    root, environment = evaluated
    for name, value in {**environment, "DAGSTER_HOME": str(tmp_path / "dagster")}.items():
        monkeypatch.setenv(name, value)
    warehouse = Warehouse(environment["TAXO_WAREHOUSE"])
    threshold = review_threshold(warehouse, _key(warehouse), 0.5)
    products = catalogue(tmp_path / "ui.csv", 6)
    assert classify_products(["--products", str(products), "--target-precision", "0.5", "--trust-evaluation",
                              "--dagster"]) == 0  # fmt: skip
    with dg.DagsterInstance.get() as instance:
        (run,) = [r.dagster_run for r in instance.get_run_records()]
        (record,) = instance.fetch_materializations(dg.AssetKey("catalogue_classifications"), limit=1).records
    assert run.run_config["ops"]["catalogue_classifications"]["config"]["target_precision"] == 0.5
    assert run.run_config["ops"]["catalogue_classifications"]["config"]["trust_evaluation"] is True
    assert record.asset_materialization.metadata["review_threshold"].value == pytest.approx(threshold)
    rows = pl.read_parquet(root / "data" / run_dir(products) / "shard-00000.parquet")
    assert rows["needs_review"].to_list() == [c < threshold for c in rows["confidence"].to_list()]


def test_reviewed_products_keep_their_label_and_leave_the_queue(evaluated, monkeypatch, tmp_path, capsys):
    root, environment = evaluated
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    products = catalogue(tmp_path / "reviewed.csv", 12)
    arguments = ["--products", str(products), "--target-precision", "0.5", "--trust-evaluation", "--shard-size", "4"]
    assert classify_products(arguments) == 0
    shard = root / "data" / run_dir(products) / "shard-00000.parquet"
    before = {r["product_id"]: r for r in pl.read_parquet(shard).iter_rows(named=True)}
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        paths = [r[0] for r in con.execute("SELECT path FROM taxonomy_trimmed WHERE path LIKE '% > % > %' ORDER BY path").fetchall()]
    labels = {p: next(c for c in paths if c != before[p]["category"]) for p in ("p0000", "p0001", "p0002")}
    texts = pl.read_csv(products).filter(pl.col("product_id").is_in(list(labels)))
    corrections = texts.with_columns(  # p0002's text has changed since its review: it is classified afresh
        pl.col("product_id").replace_strict(labels).alias("category"),
        pl.when(pl.col("product_id") == "p0002").then(pl.lit("Another product")).otherwise("product_title").alias("product_title"),
    ).select("product_id", "category", "product_title", "product_description")  # fmt: skip
    corrections.write_csv(tmp_path / "corrections.csv")
    monkeypatch.setenv("TAXO_CORRECTIONS", str(tmp_path / "corrections.csv"))
    capsys.readouterr()
    assert classify_products(arguments) == 0
    printed = capsys.readouterr().out
    assert "2 products keep a reviewer's category (TAXO_CORRECTIONS)" in printed
    # the reviews match shard 0 only: title-description does not learn from them, the other shards stay
    assert "this run classified 4 products in shards [0], kept shards [1, 2]" in printed
    after = {r["product_id"]: r for r in pl.read_parquet(shard).iter_rows(named=True)}
    for product in ("p0000", "p0001"):
        row = after[product]
        assert (row["category"], row["l3"], row["score"], row["confidence"]) == (labels[product], labels[product], None, 1.0)
        assert row["reviewed"] and row["needs_review"] is False
        assert row["top_k"] == before[product]["top_k"]  # what the model said stays
    for product in set(after) - {"p0000", "p0001"}:  # the others as before, p0002 included
        assert not after[product]["reviewed"]
        assert (after[product]["category"], after[product]["needs_review"]) == (before[product]["category"], before[product]["needs_review"])
        assert after[product]["confidence"] == pytest.approx(before[product]["confidence"])
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        queued = {r[0] for r in con.execute("SELECT product_id FROM review_queue WHERE catalogue = ?",
                                            [catalogue_name(products)]).fetchall()}  # fmt: skip
    every = pl.read_parquet(shard.parent / "shard-*.parquet")  # the three shards
    assert queued == set(every.filter(pl.col("needs_review"))["product_id"]) and not queued & {"p0000", "p0001"}
