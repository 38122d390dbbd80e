"""Real merchants' Shopify exports through `classify-products` as a user runs it (label transfer with
all-MiniLM-L6-v2 on the real SIE server, evaluated on the sample): the export read as it is, the merchant's
categories kept and learned from, the Google category of every product, the Shopify import file holding
only what the target precision accepts, and bad exports refused before anything is written."""

import csv
import hashlib
import json
import re
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from taxo_pipeline.classification.catalogue_labels import label_at_depth
from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.dataset.google_mapping import load_google_mapping
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline_tests.factories import (
    GOOGLE_CATEGORIES,
    GOOGLE_MAPPING,
    MERCHANT_EXPORTS,
    SAMPLE_PRODUCTS,
    sample_taxonomy,
)
from taxo_pipeline_tests.sie.sie_testkit import MINILM

EXPORTS = ("las-lira.csv", "garden-solutions.csv")
RUN = "label-transfer--sentence-transformers__all-MiniLM-L6-v2--full-depth"


def merchant_taxonomy(path: Path) -> Path:
    """The sample's cut of the taxonomy, plus every category the two exports name with its ancestors."""
    sample_taxonomy(path)
    lines = path.read_text().splitlines()
    full = (MERCHANT_EXPORTS.parent.parent / "shopify-taxonomy" / "categories.txt").read_text().splitlines()
    wanted = set()
    for export in EXPORTS:
        for row in csv.DictReader((MERCHANT_EXPORTS / export).open(encoding="utf-8")):
            parts = (row["Product Category"] or "").split(" > ")
            wanted |= {" > ".join(parts[: i + 1]) for i in range(len(parts))}
    kept = {line.split(" : ", 1)[1].strip() for line in lines if " : " in line}
    extra = [line for line in full if " : " in line and line.split(" : ", 1)[1].strip() in wanted - kept]
    path.write_text("\n".join(lines + extra) + "\n")
    return path


@pytest.fixture(scope="module")
def merchant(sie_server, test_catalogue, tmp_path_factory):
    """A workspace where label transfer (MiniLM, full depth) is evaluated on the sample; its environment."""
    from taxo_pipeline.definitions import defs

    root = tmp_path_factory.mktemp("merchant")
    environment = {"TAXO_DATA_DIR": root / "data", "TAXO_WAREHOUSE": root / "warehouse.duckdb",
                   "TAXO_PRODUCTS": SAMPLE_PRODUCTS, "TAXO_TAXONOMY": merchant_taxonomy(root / "categories.txt"),
                   "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server}  # fmt: skip
    data = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
            "products_experiment", "category_embeddings"]  # fmt: skip
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for name, value in environment.items():
            env.setenv(name, str(value))
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        for selection, key in ((data, dg.MultiPartitionKey({"model": MINILM, "variant": "full-depth"})),
                               (["label_transfer_predictions", "label_transfer_metrics"], MINILM)):  # fmt: skip
            run = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
                                 partition_key=key, resources=pipeline_resources())  # fmt: skip
            assert run.success
    return root, {k: str(v) for k, v in environment.items()}


@pytest.fixture
def env(merchant, monkeypatch):
    root, environment = merchant
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return root


def export_products(path: Path, nodes: set[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The export's handles in order, their usable labels at depth 3 and their titles (a plain csv reader)."""
    handles, labels, titles = [], {}, {}
    for row in csv.DictReader(path.open(encoding="utf-8")):
        if row["Handle"] not in titles:
            handles.append(row["Handle"])
            titles[row["Handle"]] = row["Title"]
            if label := label_at_depth(row["Product Category"], nodes, 3):
                labels[row["Handle"]] = label
    return handles, labels, titles


def _nodes(root: Path) -> set[str]:
    return set(TrimmedTaxonomy.from_categories(parse_categories(root / "categories.txt")).paths)


def test_a_shopify_export_is_classified_as_it_is_and_learned_from(env, tmp_path, capsys):
    export = MERCHANT_EXPORTS / "las-lira.csv"
    handles, labels, titles = export_products(export, _nodes(env))
    # 143 products: 27 without a category, 33 `Uncategorized`, 6 in a category the 2026-08 release retired
    assert len(handles) == 143 and len(labels) == 77

    assert classify_products(["--products", str(export), "--target-precision", "0.9", "--output", str(tmp_path / "all.parquet")]) == 0
    out = capsys.readouterr()
    assert "77 products carry a category the merchant set" in out.err
    assert ("39 labels are not taxonomy paths and were classified as unlabelled: 'Uncategorized' x33, "
            "'Home & Garden > Plants > Seeds > Plant & Flower Bulbs' x6") in out.err  # fmt: skip
    assert "learned from the catalogue's 77 labelled products (5-fold cross-fitting" in out.err
    assert "77 products keep the category the merchant set: confidence 1, never queued" in out.out

    rows = pl.read_parquet(tmp_path / "all.parquet")
    assert rows["product_id"].to_list() == handles
    merchant = rows.filter(pl.col("category_source") == "merchant")
    assert dict(merchant.select("product_id", "category").iter_rows()) == labels
    assert merchant["confidence"].to_list() == [1.0] * 77 and not merchant["needs_review"].any()
    predicted = rows.filter(pl.col("category_source") == "predicted")
    assert predicted.height == 66 and predicted["category"].null_count() == 0
    google = load_google_mapping(GOOGLE_MAPPING, GOOGLE_CATEGORIES)
    expected = [google.lookup(c) for c in rows["category"].to_list()]
    assert list(zip(rows["google_category_id"].to_list(), rows["google_category"].to_list())) == [
        e if e else (None, None) for e in expected]  # fmt: skip
    assert rows.filter(pl.col("category") == "Home & Garden > Plants > Flowers")["google_category_id"][0] is not None

    # what it learned, in the view too
    learned = json.loads((env / "data" / "classifications" / catalogue_name(export) / RUN / "learned.json").read_text())
    assert learned["labelled"] == 77 and learned["figures"]["labelled"] == 77
    with duckdb.connect(str(env / "warehouse.duckdb"), read_only=True) as con:
        view = con.execute("SELECT labelled, exact_accuracy, review_threshold FROM catalogue_learning "
                           "WHERE catalogue = ?", [catalogue_name(export)]).fetchone()  # fmt: skip
        queued = con.execute("SELECT count(*) FROM review_queue WHERE catalogue = ?", [catalogue_name(export)]).fetchone()
    assert view[0] == 77 and view[1] == pytest.approx(learned["figures"]["exact_accuracy"])
    assert queued[0] == predicted.filter(pl.col("needs_review")).height

    # the Shopify import file: the accepted predictions only, with the export's option columns and variant rows
    assert classify_products(["--products", str(export), "--target-precision", "0.9", "--output", str(tmp_path / "shopify.csv")]) == 0
    accepted = predicted.filter(~pl.col("needs_review"))
    written = list(csv.DictReader((tmp_path / "shopify.csv").open(encoding="utf-8")))
    header = next(csv.reader((tmp_path / "shopify.csv").open(encoding="utf-8")))
    assert header[:3] == ["Handle", "Title", "Product Category"] and set(header[3:]) <= {
        f"Option{n} {p}" for n in (1, 2, 3) for p in ("Name", "Value", "Linked To")}  # fmt: skip
    firsts = [r for r in written if r["Title"]]
    assert {r["Handle"]: r["Product Category"] for r in firsts} == dict(accepted.select("product_id", "category").iter_rows())
    assert all(r["Title"] == titles[r["Handle"]] for r in firsts)
    assert f"{accepted.height} products with a category accepted at precision 0.9 -> {tmp_path / 'shopify.csv'}" in capsys.readouterr().out


def blanked(export: Path, target: Path, share: float) -> set[str]:
    """A copy of the export with `share` of its products' categories blanked (by a hash of the handle)."""
    chosen = set()
    with export.open(encoding="utf-8", newline="") as src, target.open("w", encoding="utf-8", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if int(hashlib.sha256(row["Handle"].encode()).hexdigest()[:8], 16) % 100 < share * 100:
                chosen.add(row["Handle"])
                row["Product Category"] = ""
            writer.writerow(row)
    return chosen


def test_a_shop_with_most_categories_blanked_gets_them_back_from_the_rest(env, tmp_path):
    export = tmp_path / "garden-solutions.csv"
    hidden = blanked(MERCHANT_EXPORTS / "garden-solutions.csv", export, 0.7)
    _, truth, _ = export_products(MERCHANT_EXPORTS / "garden-solutions.csv", _nodes(env))
    assert classify_products(["--products", str(export), "--target-precision", "0.9", "--output", str(tmp_path / "out.parquet")]) == 0
    rows = pl.read_parquet(tmp_path / "out.parquet", columns=["product_id", "category", "category_source", "needs_review"])
    guessed = rows.filter(pl.col("product_id").is_in(list(hidden)))
    assert guessed["category_source"].unique().to_list() == ["predicted"] and guessed.height == len(hidden) > 40
    right = [truth[p] == c for p, c in guessed.select("product_id", "category").iter_rows()]
    assert sum(right) / len(right) >= 0.9  # a one-category shop: its own 21 labels settle it
    assert rows.filter(~pl.col("product_id").is_in(list(hidden)))["category_source"].unique().to_list() == ["merchant"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"Title,Body (HTML),Product Category\nHat,<p>A hat</p>,\n", r"header \(line 1\).*Handle"),
        (b"Handle,Title,Body (HTML)\nhat,Hat,<p>A hat</p>\nscarf,,<p>Wool</p>\nscarf,,\n", r"row 2.*'scarf'.*Title"),
        (b"Handle,Title,Body (HTML)\nhat,Hat,<p>caf\xe9</p>\n", r"row 1.*Body \(HTML\).*UTF-8"),
    ],
)
def test_a_bad_export_is_refused_before_anything_is_written(env, tmp_path, capsys, content, message):
    export = tmp_path / "products_export.csv"
    export.write_bytes(content)
    assert classify_products(["--products", str(export), "--output", str(tmp_path / "out.parquet")]) != 0
    err = capsys.readouterr().err
    assert str(export) in err
    assert re.search(message, err), err
    assert not (tmp_path / "out.parquet").exists()
    assert not (env / "data" / "classifications" / catalogue_name(export)).exists()


def test_without_labels_nothing_is_written_back_and_every_product_is_queued(env, tmp_path, capsys):
    export = tmp_path / "garden-solutions.csv"
    hidden = blanked(MERCHANT_EXPORTS / "garden-solutions.csv", export, 1.0)
    assert classify_products(["--products", str(export), "--target-precision", "0.9", "--output", str(tmp_path / "back.csv")]) == 0
    out = capsys.readouterr()
    assert "no product carries a category of its own" in out.err and "every product goes to review" in out.err
    assert (tmp_path / "back.csv").read_text() == "Handle,Title,Product Category,Option1 Name,Option1 Value,Option1 Linked To,Option2 Name,Option2 Value,Option2 Linked To,Option3 Name,Option3 Value,Option3 Linked To\n"
    with duckdb.connect(str(env / "warehouse.duckdb"), read_only=True) as con:
        queued = {r[0] for r in con.execute("SELECT product_id FROM review_queue WHERE catalogue = ?", [catalogue_name(export)]).fetchall()}
    assert queued == hidden and len(hidden) == 70


def test_dagster_shard_runs_learn_once_and_keep_the_labels(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    export = MERCHANT_EXPORTS / "las-lira.csv"
    _, labels, _ = export_products(export, _nodes(env))
    arguments = ["--products", str(export), "--shard-size", "50", "--target-precision", "0.9", "--dagster"]
    assert classify_products([*arguments, "--output", str(tmp_path / "out.parquet")]) == 0
    assert "learned from the catalogue's 77 labelled products" in capsys.readouterr().err
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(dg.AssetKey("catalogue_classifications"), limit=10).records
    metadata = [r.asset_materialization.metadata for r in records]
    assert len(metadata) == 3 and sum(m["merchant_labelled_products"].value for m in metadata) == 77
    assert {m["catalogue_learning"].value["labelled"] for m in metadata} == {77}
    rows = pl.read_parquet(tmp_path / "out.parquet")
    assert dict(rows.filter(pl.col("category_source") == "merchant").select("product_id", "category").iter_rows()) == labels
    run_folder = env / "data" / "classifications" / catalogue_name(export) / RUN
    assert len(list(run_folder.glob("voters-*.npz"))) == 1  # one learning, read by the three shard runs
