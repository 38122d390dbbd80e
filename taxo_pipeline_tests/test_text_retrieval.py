"""Text retrieval end to end through a real SIE server: all-MiniLM-L6-v2 on the real sample rows
and the real taxonomy, both variants, checked against an independent reimplementation."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from PIL import Image
from sie_sdk import Item, SIEClient

from taxo_pipeline.cli.evaluate import eval_text_retrieval
from taxo_pipeline.cli.main import main
from taxo_pipeline.cli.predict import predict_text_retrieval
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline.evaluation.charts import FOOTER, GROUP, HEADER, WIDTH
from taxo_pipeline.evaluation.metrics import evaluate_paths
from taxo_pipeline.settings import EXPERIMENT_FILE
from taxo_pipeline_tests.factories import HATS, SAMPLE_PRODUCTS, SUBTREE, png_in_markdown, subtree_sources
from taxo_pipeline_tests.sie.sie_testkit import MINILM, write_catalogue

VARIANTS = ("full-path", "leaf")
SELECTION = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "products_experiment",
             "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(sie_server, test_catalogue, taxonomy_file, tmp_path_factory):
    """One warehouse for the module: both MiniLM partitions materialized once, as a user would."""
    root = tmp_path_factory.mktemp("text-retrieval")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TAXO_DATA_DIR", str(root / "data"))
        env.setenv("TAXO_WAREHOUSE", str(root / "warehouse.duckdb"))
        env.setenv("TAXO_PRODUCTS", str(SAMPLE_PRODUCTS))
        env.setenv("TAXO_TAXONOMY", str(taxonomy_file))
        env.setenv("TAXO_MODELS", str(test_catalogue))
        env.setenv("SIE_BASE_URL", sie_server)
        env.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("encoder_model", [MINILM])

            def materialize(variant: str) -> dg.ExecuteInProcessResult:
                return dg.materialize(
                    [*defs.assets, *defs.asset_checks], selection=SELECTION, instance=instance,
                    partition_key=dg.MultiPartitionKey({"model": MINILM, "variant": variant}),
                    resources=pipeline_resources(),
                )

            first = {variant: materialize(variant) for variant in VARIANTS}
            yield root, first, materialize


def query(root, sql, params=()):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def metadata(result, asset):
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_predictions_and_metrics_tables_agree_with_a_recomputation(pipeline):
    root, first, _ = pipeline
    for variant in VARIANTS:
        assert first[variant].success
        rows = query(
            root,
            """SELECT p.product_id, p.category, e.ground_truth_category, e.potential_product_categories
               FROM predictions p JOIN products_experiment e USING (product_id)
               WHERE approach = 'text-retrieval' AND model = ? AND variant = ? AND rank = 1""",
            [MINILM, variant],
        )
        assert len(rows) == 260
        recomputed = evaluate_paths([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        stored = dict(
            query(root, "SELECT mode || '/' || scope, f1 FROM metrics WHERE model = ? AND variant = ?", [MINILM, variant])
        )
        assert len(stored) == 8  # strict/lenient x hierarchical, macro L1/L2/L3
        assert stored["strict/hierarchical"] == pytest.approx(recomputed["strict"]["hierarchical"]["f1"])
        assert stored["lenient/macro_l2"] == pytest.approx(recomputed["lenient"]["macro"]["l2"]["f1"])
        # the sample has no potentials, so lenient equals strict
        assert stored["lenient/hierarchical"] == stored["strict/hierarchical"]
        assert metadata(first[variant], "text_retrieval_metrics")["strict_hf1"] == pytest.approx(stored["strict/hierarchical"])
        # the chart reads the warehouse: full-path ran first, so its chart has one bar group, leaf's both variants
        chart = Image.open(io.BytesIO(png_in_markdown(metadata(first[variant], "text_retrieval_metrics")["hf1_by_approach"])))
        assert chart.format == "PNG"
        assert chart.size == (WIDTH, HEADER + (VARIANTS.index(variant) + 1) * GROUP + FOOTER)
        ranks = query(
            root, "SELECT min(rank), max(rank), count(DISTINCT product_id) FROM predictions WHERE variant = ?", [variant]
        )
        assert ranks == [(1, 5, 260)]


def _reference_hf1(paths, documents, descriptions, truths, base_url):
    """The reference's method written out plainly: encode, cosine nearest category, micro hF1."""
    with SIEClient(base_url) as client:
        def encode(texts, is_query):
            out = []
            for start in range(0, len(texts), 64):
                results = client.encode(MINILM, [Item(text=t) for t in texts[start : start + 64]], is_query=is_query)
                out += [r["dense"] for r in results]
            matrix = np.asarray(out, dtype=np.float64)
            return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

        categories, queries = encode(documents, False), encode(descriptions, True)
    predicted = [paths[i] for i in np.argmax(queries @ categories.T, axis=1)]
    overlap = n_pred = n_ref = 0
    for pred, truth in zip(predicted, truths):
        a = {" > ".join(pred.split(" > ")[:k]) for k in range(1, pred.count(" > ") + 2)}
        b = {" > ".join(truth.split(" > ")[:k]) for k in range(1, truth.count(" > ") + 2)}
        overlap, n_pred, n_ref = overlap + len(a & b), n_pred + len(a), n_ref + len(b)
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hf1_matches_an_independent_reimplementation_of_the_reference(pipeline, sie_server, variant):
    root, _, _ = pipeline
    paths = [p for (p,) in query(root, "SELECT path FROM taxonomy_trimmed ORDER BY path")]
    documents = paths if variant == "full-path" else [p.split(" > ")[-1] for p in paths]
    products = query(root, "SELECT product_description, ground_truth_category FROM products_experiment ORDER BY product_id")
    expected = _reference_hf1(paths, documents, [d for d, _ in products], [t for _, t in products], sie_server)
    (stored,) = query(
        root, "SELECT f1 FROM metrics WHERE model = ? AND variant = ? AND mode = 'strict' AND scope = 'hierarchical'",
        [MINILM, variant],
    )[0]
    assert stored == pytest.approx(expected, abs=0.01)


def test_second_materialization_calls_no_model_and_leaves_the_same_rows(pipeline):
    root, _, materialize = pipeline
    before = query(root, "SELECT count(*), count(DISTINCT (product_id, rank)) FROM predictions WHERE variant = 'leaf'")
    metrics_before = query(root, "SELECT mode, scope, f1 FROM metrics WHERE variant = 'leaf' ORDER BY ALL")
    again = materialize("leaf")
    assert again.success
    assert metadata(again, "category_embeddings")["sie_requests"] == 0
    assert metadata(again, "category_embeddings")["chroma_rebuilt"] is False
    assert metadata(again, "text_retrieval_predictions")["sie_requests"] == 0
    assert query(root, "SELECT count(*), count(DISTINCT (product_id, rank)) FROM predictions WHERE variant = 'leaf'") == before
    assert before == [(1300, 1300)]
    assert query(root, "SELECT mode, scope, f1 FROM metrics WHERE variant = 'leaf' ORDER BY ALL") == metrics_before
    # latencies are those of the requests that produced the vectors, kept across cached runs
    (p50, count) = query(
        root, "SELECT median(latency_ms), count(*) FROM request_latencies WHERE variant = 'leaf' AND stage = 'query_encode'"
    )[0]
    assert count == 33 and p50 > 0  # 260 descriptions in requests of 8


def test_eval_command_writes_the_reference_json(pipeline, tmp_path, capsys, monkeypatch):
    root, _, _ = pipeline
    output = tmp_path / "eval.json"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    code = eval_text_retrieval(
        ["--model", MINILM, "--variant", "full-path", "--index-dir", str(root / "data" / "chroma"),
         "--output", str(output), "--limit", "40"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    assert list(report) == ["model", "variant", "index_dir", "rebuild", "limit", "count", "strict", "lenient", "latency_ms"]
    assert (report["model"], report["variant"], report["limit"], report["count"]) == (MINILM, "full-path", 40, 40)
    assert set(report["strict"]) == {"hierarchical", "macro"} and set(report["strict"]["macro"]) == {"l1", "l2", "l3"}
    # the 40 descriptions come from the embedding cache: the first run encoded all 260 shortest first,
    # 8 per request, so their latencies are those of the requests that carried them
    descriptions = pl.read_parquet(root / "data" / EXPERIMENT_FILE)["product_description"].to_list()
    unique = list(dict.fromkeys(descriptions))
    shortest_first = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    request_of = {unique[i]: position // 8 for position, i in enumerate(shortest_first)}
    carried_by = {request_of[d] for d in descriptions[:40]}
    assert report["latency_ms"]["request_count"] == len(carried_by) and report["latency_ms"]["batch_size"] == 8
    stored = query(
        root, "SELECT count, f1 FROM metrics WHERE variant = 'full-path' AND mode = 'strict' AND scope = 'hierarchical' "
        "ORDER BY count",
    )  # fmt: skip
    # the --limit run wrote its own rows beside the full evaluation's, which the leaderboard still shows
    assert [count for count, _ in stored] == [40, 260]
    assert report["strict"]["hierarchical"]["f1"] == pytest.approx(stored[0][1])
    assert query(root, "SELECT products, strict FROM leaderboard WHERE approach = 'text-retrieval' AND variant = 'full-path'") == [
        (260, pytest.approx(stored[1][1]))
    ]
    # the run went through the persistent Dagster instance, so the UI lists it with its partition
    with dg.DagsterInstance.get() as instance:
        runs = list(reversed(instance.get_runs()))  # the data assets, the category index, then the approach
    assert len(runs) == 3 and all(r.is_success for r in runs)
    run = runs[-1]
    assert (run.tags["dagster/partition/model"], run.tags["dagster/partition/variant"]) == (MINILM, "full-path")


def test_predict_command_prints_paths_with_distances(pipeline, capsys):
    root, _, _ = pipeline
    code = predict_text_retrieval(
        ["--model", MINILM, "--variant", "full-path", "--index-dir", str(root / "data" / "chroma"),
         "--description", "Handwoven straw Panama hat with a cotton ribbon.", "--top-k", "3"]
    )  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert printed[:2] == [
        f"# text-retrieval, {MINILM}, full-path documents: top 3, best first",
        "# score: cosine distance between the description and the category document (1 - similarity): lower is closer",
    ]
    assert printed[5].startswith("# confidence that the top category is right: 0.")  # the stored calibration's
    out = [line for line in printed if not line.startswith("#")]
    paths = {p for (p,) in query(root, "SELECT path FROM taxonomy_trimmed")}
    matches = [line.split("\t") for line in out[:3]]
    assert all(path in paths for path, _ in matches)
    distances = [float(d) for _, d in matches]
    assert distances == sorted(distances) and 0 <= distances[0] < 1
    assert matches[0][0].startswith("Apparel & Accessories > Clothing Accessories")
    assert [line.split("\t")[0] for line in out[3:]] == ["query_encode_latency_ms", "total_latency_ms"]


def test_predict_with_only_a_taxonomy_builds_only_the_taxonomy_and_its_index(sie_server, test_catalogue, tmp_path):
    # offline, with no product data set: TAXO_PRODUCTS names a file that does not exist
    sources = subtree_sources(tmp_path / "sources")
    env = {**os.environ, "SIE_BASE_URL": sie_server, "TAXO_MODELS": str(test_catalogue),
           "TAXO_PRODUCTS": str(tmp_path / "no-products.jsonl"), "TAXO_DATA_DIR": str(tmp_path / "data"),
           "TAXO_WAREHOUSE": str(tmp_path / "warehouse.duckdb"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}  # fmt: skip
    env.pop("TAXO_TAXONOMY", None)
    command = [str(Path(sys.executable).parent / "predict-text-retrieval"), "--model", MINILM, "--variant", "full-path",
               "--taxonomy", str(sources / "categories.txt"), "--top-k", "3",
               "--description", "Handwoven straw Panama hat with a cotton ribbon."]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    lines = [line.split("\t") for line in completed.stdout.splitlines() if not line.startswith("#")]
    # what MiniLM ranks first among the subtree's 37 nodes; then headwear that is not a hat
    assert [path for path, _ in lines[:3]] == [HATS, f"{SUBTREE} > Bandanas & Headties", f"{SUBTREE} > Handkerchiefs"]
    assert 0 < float(lines[0][1]) < float(lines[1][1])
    assert [name for name, _ in lines[3:]] == ["query_encode_latency_ms", "total_latency_ms"]
    # the taxonomy's tables, then the category index: no product asset ran
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = list(reversed(instance.get_runs()))
        planned = [
            {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records}
            for run in runs
        ]  # fmt: skip
    assert planned == [{"raw_taxonomy", "taxonomy_trimmed", "taxonomy_full_depth"}, {"category_embeddings"}]
    assert all(run.is_success for run in runs)
    assert query(tmp_path, "SELECT count(*) FROM category_embeddings") == [(37,)]  # the subtree's L1-L3 nodes

    # issue 32: again without SIE_BASE_URL, the index built and the description's vector cached, no server starts
    env.pop("SIE_BASE_URL")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "SIE server" not in again.stderr, again.stderr
    assert not list((tmp_path / "data" / "logs").glob("sie-server-*.log"))
    cached = [line.split("\t") for line in again.stdout.splitlines() if not line.startswith("#")]
    assert cached[:3] == lines[:3] and [name for name, _ in cached[3:]] == ["total_latency_ms"]  # no request timed


def test_missing_sources_are_named_together_before_any_server_starts(tiny_catalogue_entries, tmp_path, monkeypatch, capsys):
    # MiniLM disabled and no SIE_BASE_URL: starting a server would fail on that before the sources are read
    monkeypatch.setenv("TAXO_MODELS", str(write_catalogue(tmp_path / "models.yaml", [{**tiny_catalogue_entries[MINILM], "enabled": False}])))
    monkeypatch.delenv("SIE_BASE_URL", raising=False)
    for name, value in {"TAXO_DATA_DIR": tmp_path / "data", "TAXO_WAREHOUSE": tmp_path / "taxo.duckdb",
                        "TAXO_PRODUCTS": tmp_path / "no-products.jsonl", "TAXO_TAXONOMY": tmp_path / "no-categories.txt",
                        "DAGSTER_HOME": tmp_path / "dagster_home"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    # label transfer learns from the labelled products: both sources are missing, and both named
    assert main(["predict", "label-transfer", "--model", MINILM, "--description", "A straw hat."]) == 1
    error = capsys.readouterr().err
    assert "the data sources are not available:" in error and "not enabled" not in error
    assert f"products file {tmp_path / 'no-products.jsonl'} does not exist (set TAXO_PRODUCTS" in error
    assert f"taxonomy file {tmp_path / 'no-categories.txt'} does not exist (set TAXO_TAXONOMY" in error
    # the reference's retrieval reads only the taxonomy: only it is named
    assert predict_text_retrieval(["--model", MINILM, "--description", "A straw hat."]) == 1
    error = capsys.readouterr().err
    assert "TAXO_TAXONOMY" in error and "TAXO_PRODUCTS" not in error
    assert not (tmp_path / "dagster_home").exists()  # nothing ran
