"""Classifying an unlabelled catalogue: the catalogue reader, the calibration on a known case, and
`classify-products` end to end through the real SIE server (all-MiniLM-L6-v2) after an evaluation of
title-description on the sample; a SIGKILLed run resumes from the shards it wrote."""

import json
import os
import re
import shutil
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from taxo_pipeline.classification.calibration import features
from taxo_pipeline.classification.evaluated import load_calibration, save_calibration
from taxo_pipeline.classification.product_catalogue import read_shards, validate_catalogue
from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.classify_testkit import evaluated_workspace, kill_after_shards, run_dir
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS
from taxo_pipeline_tests.sie.sie_testkit import MINILM


def _csv(path, rows):
    pl.DataFrame(rows, schema=["product_id", "product_title", "product_description"], orient="row").write_csv(path)
    return path


# --- reading a catalogue --------------------------------------------------------------------------------------


def test_a_catalogue_without_labels_reads_in_shards_with_ids_from_the_file(tmp_path):
    path = tmp_path / "cat.jsonl"
    path.write_text("".join(json.dumps({"product_title": f"t{i}", "product_description": "" if i else "d"}) + "\n"
                            for i in range(5)))  # fmt: skip
    shards = list(read_shards(path, 2))
    assert [(s.index, s.first_row, s.products["product_id"].to_list()) for s in shards] == [
        (0, 0, ["0", "1"]), (1, 2, ["2", "3"]), (2, 4, ["4"])
    ]  # fmt: skip
    assert read_products(path, labelled=False)["product_id"].to_list() == ["0", "1", "2", "3", "4"]


def test_a_row_with_no_text_or_a_repeated_id_is_named(tmp_path):
    empty = _csv(tmp_path / "empty.csv", [("a", "Hat", ""), ("b", "", "  ")])
    with pytest.raises(InputError, match=r"empty.csv, row 2: product_title and product_description are both empty"):
        list(read_shards(empty, 10))
    repeated = _csv(tmp_path / "repeated.csv", [("a", "Hat", ""), ("b", "Cap", ""), ("a", "Scarf", "")])
    with pytest.raises(InputError, match=r"repeated.csv, row 3 repeats product_id 'a' \(first at row 1\); ids must be"):
        validate_catalogue(repeated, 2)
    with pytest.raises(InputError, match=r"lacks required column\(s\) product_description"):
        list(read_shards(_write(tmp_path / "few.csv", "product_title\nHat\n"), 2))


def _write(path, text):
    path.write_text(text)
    return path


# --- calibration (the methods by hand: test_calibration.py) ----------------------------------------------------


def test_calibrations_are_stored_per_key_with_and_without_a_reranker(tmp_path):
    # 4 products, two stored keys: a retrieval (no reranker; written first, as the main job does) and a reranking
    warehouse = Warehouse(tmp_path / "w.duckdb")
    truths = {"p1": "A > B", "p2": "A > C", "p3": "D > E", "p4": "D > F"}
    retrieval = ResultKey("text-retrieval", "m", "full-path", None, "d1")
    reranking = ResultKey("reranking", "m", "full-path", "r", "d1")
    rows = [(k, p, rank, category, score) for k, right in ((retrieval, {"p1"}), (reranking, {"p1", "p2", "p3"}))
            for p in truths for rank, category, score in
            ((1, truths[p] if p in right else "X > Y", 0.9 if p in right else 0.4), (2, "Z", 0.1))]  # fmt: skip
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE products_experiment (product_id VARCHAR, ground_truth_category VARCHAR)")
        con.executemany("INSERT INTO products_experiment VALUES (?, ?)", list(truths.items()))
        con.execute("CREATE TABLE predictions (approach VARCHAR, model VARCHAR, reranker VARCHAR, variant VARCHAR, "
                    "dataset VARCHAR, product_id VARCHAR, rank INTEGER, category VARCHAR, score DOUBLE)")  # fmt: skip
        con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*k.columns.values(), p, rank, c, sc) for k, p, rank, c, sc in rows])  # fmt: skip
    for key in (retrieval, reranking):
        save_calibration(warehouse, key)
    assert [load_calibration(warehouse, k).accuracy for k in (retrieval, reranking)] == [0.25, 0.75]
    assert load_calibration(warehouse, reranking).products == 4
    stored = save_calibration(warehouse, retrieval)  # scoring again replaces the key's row
    assert load_calibration(warehouse, retrieval) == stored
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM calibrations").fetchone() == (2,)


# --- classify-products through the real SIE server ------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, taxonomy_file, tmp_path_factory):
    """A workspace where title-description MiniLM full-depth (the documents the best approaches read) has been
    evaluated on the sample."""
    root = tmp_path_factory.mktemp("classify")
    return root, evaluated_workspace(root, sie_server, test_catalogue, taxonomy_file)


def _env(monkeypatch, environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def test_without_an_evaluation_the_command_says_to_run_the_main_job(workspace, capsys):
    catalogue = _csv(workspace / "cat.csv", [("a", "Straw hat", "")])
    assert classify_products(["--products", str(catalogue)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"no evaluation in the warehouse {workspace / 'warehouse' / 'taxo.duckdb'} yet: run `taxo-pipeline materialize` first"
    )


def test_a_bad_shard_size_in_the_environment_is_named(workspace, monkeypatch, capsys):
    monkeypatch.setenv("TAXO_SHARD_SIZE", "0")
    assert classify_products(["--products", "cat.csv"]) == 1
    assert capsys.readouterr().err.strip() == (
        "classify-products: error: bad setting(s): TAXO_SHARD_SIZE='0': expected a positive whole number"
    )


def test_a_tiny_catalogue_gets_the_obvious_categories_and_a_row_each(evaluated, monkeypatch, tmp_path, capsys):
    root, environment = evaluated
    _env(monkeypatch, environment)
    catalogue = _csv(tmp_path / "tiny.csv", [
        ("hat", "Panama hat", "Handwoven straw Panama hat with a cotton ribbon."),
        ("scarf", "Wool scarf", "A long knitted wool scarf for winter."),
        ("tent", "Camping tent", ""),
    ])  # fmt: skip
    output = tmp_path / "out.csv"
    cached = _cached_vectors(environment)
    assert classify_products(["--products", str(catalogue), "--output", str(output), "--top-k", "3"]) == 0
    assert _cached_vectors(environment) == cached  # a catalogue run never writes the warehouse's cache
    printed = capsys.readouterr()
    assert "3 products in 1 shards; this run classified 3 products in shards [0]" in printed.out
    assert "held-out reliability" in printed.err
    rows = pl.read_csv(output)
    assert rows["product_id"].to_list() == ["hat", "scarf", "tent"]
    by_id = {r["product_id"]: r for r in rows.iter_rows(named=True)}
    assert by_id["hat"]["category"] == "Apparel & Accessories > Clothing Accessories > Hats"
    assert by_id["scarf"]["category"] == "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"
    assert by_id["tent"]["category"].startswith(f"{by_id['tent']['l2']} > ")  # a title alone is enough to classify
    assert by_id["hat"]["l2"] == "Apparel & Accessories > Clothing Accessories"
    assert all(0 < r["confidence"] < 1 for r in by_id.values())
    # the confidence is the calibration the metrics asset stored for this key, applied to the top-k
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        products, bins, dataset = con.execute(
            "SELECT products, reliability, dataset FROM calibrations "
            "WHERE approach = 'title-description' AND variant = 'full-depth'").fetchone()  # fmt: skip
    assert products == 260 and sum(b["products"] for b in json.loads(bins)) == 260
    key = ResultKey("title-description", MINILM, "full-depth", None, dataset)
    calibration = load_calibration(Warehouse(environment["TAXO_WAREHOUSE"]), key)
    ranked = [[(c["category"], c["score"]) for c in json.loads(r["top_k"])] for r in by_id.values()]
    assert [r["confidence"] for r in by_id.values()] == pytest.approx(list(calibration.confidence(features(ranked))))
    assert [len(json.loads(r["top_k"])) for r in by_id.values()] == [3, 3, 3]
    # run again: the shard is kept, and the same rows go to JSON Lines and Parquet
    for name in ("out.jsonl", "out.parquet"):
        assert classify_products(["--products", str(catalogue), "--output", str(tmp_path / name), "--top-k", "3"]) == 0
        assert "classified 0 products in shards none, kept shards [0]" in capsys.readouterr().out
    assert pl.read_ndjson(tmp_path / "out.jsonl")["top_k"].list.len().to_list() == [3, 3, 3]
    again = pl.read_parquet(tmp_path / "out.parquet")
    assert again["category"].to_list() == rows["category"].to_list()
    assert again["top_k"].list.get(0).struct.field("category").to_list() == rows["category"].to_list()
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        view = con.execute("SELECT approach, model, variant, count(*), count(DISTINCT catalogue_fingerprint) "
                           "FROM classifications WHERE catalogue = ? GROUP BY ALL", [catalogue_name(catalogue)]).fetchall()  # fmt: skip
    assert view == [("title-description", MINILM, "full-depth", 3, 1)]


def _cached_vectors(environment) -> int:
    with Warehouse(environment["TAXO_WAREHOUSE"]).cache.connect(read_only=True) as con:
        return con.execute("SELECT count(*) FROM embedding_cache").fetchone()[0]


def _catalogue(path, size, changed=None):
    """`size` unique products recombined from the sample (title of one row, description of another)."""
    sample = pl.read_ndjson(SAMPLE_PRODUCTS).select("product_title", "product_description")
    titles, descriptions = sample["product_title"].to_list(), sample["product_description"].to_list()
    rows = [(f"p{i:04d}", f"{titles[i % len(titles)]} v{i}", descriptions[(i * 7 + 3) % len(descriptions)][:200])
            for i in range(size)]  # fmt: skip
    if changed is not None:
        rows[changed] = (rows[changed][0], "Changed title", "A changed description.")
    return _csv(path, rows)


def _command(catalogue, *extra):
    return [sys.executable, "-m", "taxo_pipeline.cli.classify", "--products", str(catalogue),
            "--shard-size", "20", "--chunk-size", "10", *extra]  # fmt: skip


def test_a_killed_run_resumes_from_its_shards_and_a_changed_shard_reruns_alone(evaluated, tmp_path):
    root, environment = evaluated
    env = {**os.environ, **environment}
    catalogue = _catalogue(tmp_path / "big.csv", 600)
    shards = root / "data" / run_dir(catalogue)
    written = kill_after_shards(_command(catalogue), env, shards, 3)
    assert 3 <= len(written) < 30, "the run ended before it could be killed mid-way"
    # the rest, in two concurrent parts against the same server
    parts = [subprocess.Popen(_command(catalogue, "--part", f"{i}/2"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]  # fmt: skip
    outputs = [p.communicate() for p in parts]
    assert [p.returncode for p in parts] == [0, 0], [err[-2000:] for _, err in outputs]
    kept = [re.search(r"kept shards (\[[\d, ]*\]|none)", out).group(1) for out, _ in outputs]
    assert sorted(i for k in kept if k != "none" for i in json.loads(k)) == written
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        ((rows, products),) = con.execute(
            "SELECT count(*), count(DISTINCT product_id) FROM classifications WHERE catalogue = ?",
            [catalogue_name(catalogue)]).fetchall()
    assert (rows, products) == (600, 600)
    # one row changed: its shard alone is classified again
    changed = _catalogue(tmp_path / "big.csv", 600, changed=45)
    again = subprocess.run(_command(changed), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "this run classified 20 products in shards [2]" in again.stdout
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        stamped = con.execute("SELECT count(*), count(DISTINCT catalogue_fingerprint) FROM classifications "
                              "WHERE catalogue = ?", [catalogue_name(catalogue)]).fetchall()  # fmt: skip
    assert stamped == [(600, 1)]  # the kept shards carry the changed catalogue's fingerprint too


def test_a_warehouse_without_the_calibration_says_to_run_the_main_job(evaluated, monkeypatch, tmp_path, capsys):
    root, environment = evaluated
    older = tmp_path / "older.duckdb"  # as a warehouse scored before calibrations were stored
    shutil.copy(environment["TAXO_WAREHOUSE"], older)
    with duckdb.connect(str(older)) as con:
        con.execute("DROP TABLE calibrations")
        con.execute("DROP TABLE published_calibrations")  # the copy readers read (evaluation/publication.py)
    _env(monkeypatch, {**environment, "TAXO_WAREHOUSE": str(older)})
    catalogue = _csv(tmp_path / "cat.csv", [("a", "Straw hat", "")])
    assert classify_products(["--products", str(catalogue)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"no confidence calibration of title-description {MINILM} full-depth in {older}: "
        "run `taxo-pipeline materialize` first"
    )


def test_a_depth_other_than_the_evaluations_is_refused(evaluated, monkeypatch, tmp_path, capsys):
    root, environment = evaluated
    _env(monkeypatch, {**environment, "TAXO_DEPTH": "full"})
    catalogue = _csv(tmp_path / "cat.csv", [("a", "Straw hat", "")])
    assert classify_products(["--products", str(catalogue)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"the current evaluation in {environment['TAXO_WAREHOUSE']} is at taxonomy depth 3 but TAXO_DEPTH is full: "
        "run `taxo-pipeline materialize` with TAXO_DEPTH=full first, or set TAXO_DEPTH=3"
    )
