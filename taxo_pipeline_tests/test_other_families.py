"""Image retrieval, zero-shot NLI and retrieval + reranking through a real SIE server with tiny
random-init models, on a generated shard with JPEG images and potential categories."""

import json

import duckdb
import pytest

from taxo_pipeline.cli.evaluate import eval_image_retrieval, eval_nli, eval_reranking
from taxo_pipeline.cli.predict import predict_image_retrieval, predict_nli, predict_reranking
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline_tests.factories import CAMPING, HATS, PANAMA, PANTS, RACKS, SCARVES, jpeg, product, write_shard
from taxo_pipeline_tests.sie.sie_testkit import TINY_CLIP, TINY_CROSS_ENCODER, TINY_NLI

ROWS = [
    product("Panama hat", "Handwoven straw Panama hat with a cotton ribbon.", PANAMA, (HATS, SCARVES), color=(220, 200, 120)),
    product("Silk scarf", "A light silk scarf with a floral print.", SCARVES, (SCARVES,), color=(200, 30, 60)),
    product("Chinos", "Slim cotton chino pants for every day.", PANTS, (PANTS,), color=(150, 120, 80)),
    product("Hat rack", "Wall-mounted oak rack for coats and hats.", RACKS, (RACKS, HATS), color=(90, 60, 30)),
    product("Tent", "Two-person dome tent for camping trips.", CAMPING, (CAMPING,), color=(30, 120, 40)),
    product("Wool beanie", "A warm knitted wool beanie.", HATS, (HATS,), color=(40, 40, 160)),
    # bytes that are not an image: the row is reported and skipped by image retrieval only
    product("Broken", "A product whose image is corrupt.", PANTS, (PANTS,), image={"bytes": b"\xff\xd8 not a jpeg", "path": "x.jpg"}),
]
RETRIEVER_RERANKER = f"{TINY_CLIP} + {TINY_CROSS_ENCODER}"


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, taxonomy_file, tmp_path_factory):
    """The three eval commands run once, as a user would, on one warehouse."""
    root = tmp_path_factory.mktemp("families")
    shard = write_shard(root / "shard.parquet", ROWS)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "TAXO_DATA_DIR": root / "data", "TAXO_WAREHOUSE": root / "warehouse.duckdb", "TAXO_PRODUCTS": shard,
            "TAXO_TAXONOMY": taxonomy_file, "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server,
            "DAGSTER_HOME": root / "dagster_home",
        }.items():  # fmt: skip
            env.setenv(name, str(value))
        reports = {
            "image": root / "image.json", "nli": root / "nli.json", "reranking": root / "reranking.json",
        }  # fmt: skip
        assert eval_image_retrieval(["--model", TINY_CLIP, "--variant", "full-path", "--output", str(reports["image"])]) == 0
        assert eval_nli(["--model", TINY_NLI, "--output", str(reports["nli"])]) == 0
        assert eval_reranking(
            ["--retrieval-model", TINY_CLIP, "--reranker-model", TINY_CROSS_ENCODER, "--variant", "full-path",
             "--top-k", "5", "--output", str(reports["reranking"])]
        ) == 0  # fmt: skip
        yield root, {name: json.loads(path.read_text()) for name, path in reports.items()}


def query(root, sql, params=()):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def test_every_approach_has_strict_and_lenient_metric_rows(evaluated):
    root, _ = evaluated
    rows = query(root, "SELECT approach, model || coalesce(' + ' || reranker, ''), mode, scope, count FROM metrics ORDER BY ALL")
    by_approach = {}
    for approach, model, mode, scope, count in rows:
        by_approach.setdefault((approach, model), set()).add((mode, scope, count))
    path_scopes = {(m, s) for m in ("strict", "lenient") for s in ("hierarchical", "macro_l1", "macro_l2", "macro_l3")}
    assert {(m, s) for m, s, _ in by_approach[("image-retrieval", TINY_CLIP)]} == path_scopes
    assert {(m, s) for m, s, _ in by_approach[("text-retrieval", TINY_CLIP)]} == path_scopes
    assert {(m, s) for m, s, _ in by_approach[("reranking", RETRIEVER_RERANKER)]} == path_scopes
    assert {(m, s) for m, s, _ in by_approach[("nli", TINY_NLI)]} == {("strict", "macro_l1"), ("lenient", "macro_l1")}
    # counts: 7 products; image retrieval skipped the broken image
    assert {c for _, _, c in by_approach[("image-retrieval", TINY_CLIP)]} == {6}
    assert {c for _, _, c in by_approach[("nli", TINY_NLI)]} == {7}


def test_image_retrieval_skips_and_reports_the_broken_image(evaluated):
    root, reports = evaluated
    ids = dict(query(root, "SELECT product_title, product_id FROM products_experiment"))
    predicted = {pid for (pid,) in query(root, "SELECT DISTINCT product_id FROM predictions WHERE approach = 'image-retrieval'")}
    assert ids["Broken"] not in predicted and len(predicted) == 6
    assert reports["image"]["count"] == 6
    assert list(reports["image"]) == ["model", "variant", "index_dir", "rebuild", "limit", "count", "strict", "lenient", "latency_ms"]
    assert reports["image"]["latency_ms"]["batch_size"] == 6  # one request: 6 images < batch 16
    assert reports["image"]["latency_ms"]["request_count"] == 1


def test_reranking_reorders_the_retrievers_candidates_by_score(evaluated, sie_server):
    root, reports = evaluated
    retrieved = query(
        root,
        """SELECT product_id, list(category ORDER BY rank) FROM predictions
           WHERE approach = 'text-retrieval' AND model = ? AND variant = 'full-path' GROUP BY ALL ORDER BY ALL""",
        [TINY_CLIP],
    )
    reranked = dict(
        (pid, (cats, scores))
        for pid, cats, scores in query(
            root,
            """SELECT product_id, list(category ORDER BY rank), list(score ORDER BY rank) FROM predictions
               WHERE approach = 'reranking' AND model = ? AND reranker = ? GROUP BY ALL""",
            [TINY_CLIP, TINY_CROSS_ENCODER],
        )
    )
    assert len(reranked) == 7
    description = dict(query(root, "SELECT product_id, product_description FROM products_experiment"))
    pid, candidates = retrieved[0]
    with InferenceClient(sie_server, SIESettings()) as client:
        direct = client.score(TINY_CROSS_ENCODER, description[pid], candidates)
    expected = sorted(zip(candidates, direct.tolist()), key=lambda pair: pair[1], reverse=True)
    assert reranked[pid][0] == [c for c, _ in expected]
    assert reranked[pid][1] == pytest.approx([s for _, s in expected], rel=1e-5)
    for pid, candidates in retrieved:
        cats, scores = reranked[pid]
        assert sorted(cats) == sorted(candidates) and scores == sorted(scores, reverse=True)

    report = reports["reranking"]
    assert list(report) == [
        "retrieval_model", "reranker_model", "variant", "index_dir", "rebuild", "top_k", "limit", "count", "strict",
        "lenient", "retrieval_latency_ms", "reranking_latency_ms",
    ]  # fmt: skip
    assert (report["retrieval_model"], report["reranker_model"], report["top_k"], report["count"]) == (
        TINY_CLIP, TINY_CROSS_ENCODER, 5, 7
    )
    assert report["reranking_latency_ms"]["request_count"] == 7  # one score call per product
    assert report["retrieval_latency_ms"]["batch_size"] == 7


def test_nli_prediction_is_its_top_scoring_label(evaluated, sie_server):
    root, reports = evaluated
    labels = [p for (p,) in query(root, "SELECT path FROM taxonomy_trimmed WHERE level = 1 ORDER BY path")]
    assert len(labels) == 26
    rows = query(
        root,
        """SELECT product_id, list(category ORDER BY rank), list(score ORDER BY rank) FROM predictions
           WHERE approach = 'nli' GROUP BY ALL ORDER BY ALL""",
    )
    assert len(rows) == 7
    for _, cats, scores in rows:
        assert len(cats) == 5 and set(cats) <= set(labels) and scores == sorted(scores, reverse=True)
    description = dict(query(root, "SELECT product_id, product_description FROM products_experiment"))
    pid, cats, _ = rows[0]
    with InferenceClient(sie_server, SIESettings()) as client:
        (direct,) = client.extract(TINY_NLI, [description[pid]], labels)
    assert cats[0] == max(direct, key=lambda c: c["score"])["label"]

    report = reports["nli"]
    assert list(report) == ["model", "limit", "count", "strict", "lenient", "latency_ms"]
    assert set(report["strict"]) == {"precision", "recall", "f1"}
    assert report["lenient"]["f1"] >= report["strict"]["f1"]
    assert report["latency_ms"]["request_count"] == 1 and report["latency_ms"]["batch_size"] == 7


def test_predict_commands_print_ranked_lines_then_latencies(evaluated, tmp_path, capsys):
    root, _ = evaluated
    labels = {p for (p,) in query(root, "SELECT path FROM taxonomy_trimmed WHERE level = 1")}
    paths = {p for (p,) in query(root, "SELECT path FROM taxonomy_trimmed")}

    def lines(command, argv):
        assert command(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out.strip().splitlines()
        rows = [line.split("\t") for line in out if not line.startswith("#")]  # the header and confidence lines
        return [(name, float(value)) for name, value in rows]

    ranked = lines(predict_nli, ["--model", TINY_NLI, "--description", "A warm wool beanie.", "--top-k", "3"])
    assert [name for name, _ in ranked[3:]] == ["extract_latency_ms", "total_latency_ms"]
    assert {name for name, _ in ranked[:3]} <= labels and [s for _, s in ranked[:3]] == sorted((s for _, s in ranked[:3]), reverse=True)

    image = tmp_path / "hat.jpg"
    image.write_bytes(jpeg((10, 200, 220)))  # no evaluated product's image: its encoding is not cached, so it is timed
    matches = lines(predict_image_retrieval, ["--model", TINY_CLIP, "--variant", "full-path", "--image-path", str(image), "--top-k", "4"])
    assert {p for p, _ in matches[:4]} <= paths and [d for _, d in matches[:4]] == sorted(d for _, d in matches[:4])
    assert [name for name, _ in matches[4:]] == ["query_encode_latency_ms", "total_latency_ms"]

    reranked = lines(
        predict_reranking,
        ["--retrieval-model", TINY_CLIP, "--reranker-model", TINY_CROSS_ENCODER, "--variant", "full-path",
         "--description", "Handwoven straw Panama hat.", "--top-k", "5"],
    )  # fmt: skip
    assert {p for p, _ in reranked[:5]} <= paths and [s for _, s in reranked[:5]] == sorted((s for _, s in reranked[:5]), reverse=True)
    assert [name for name, _ in reranked[5:]] == ["query_encode_latency_ms", "rerank_latency_ms", "total_latency_ms"]


def test_warehouse_views_answer_the_usual_questions(evaluated):
    root, reports = evaluated
    board = query(root, "SELECT task, approach, model, model_size, strict, lenient, variant FROM leaderboard")
    by_approach = {row[1]: row for row in board}
    assert set(by_approach) == {"text-retrieval", "image-retrieval", "reranking", "nli"}
    assert by_approach["nli"][0] == "L1 classification (L1 F1)" and by_approach["nli"][4] == pytest.approx(reports["nli"]["strict"]["f1"])
    reranking = by_approach["reranking"]
    assert reranking[0] == "L3 classification (hF1)" and reranking[2] == RETRIEVER_RERANKER
    size = query(root, "SELECT size FROM models WHERE id = ?", [TINY_CROSS_ENCODER])[0][0]
    assert reranking[3] == size  # a reranking row shows the reranker's size, as the reference's table does
    assert reranking[4] == pytest.approx(reports["reranking"]["strict"]["hierarchical"]["f1"])

    per_product = query(root, "SELECT count(*), count(*) FILTER (correct_strict) FROM product_predictions WHERE approach = 'reranking'")
    (products, correct), = per_product
    assert products == 7 and correct <= products
    stages = {row[0] for row in query(root, "SELECT DISTINCT stage FROM latencies")}
    assert {"query_encode", "extract", "rerank", "category_encode"} <= stages
    wrong_l1 = query(
        root,
        """SELECT sum(products) FROM confusions WHERE approach = 'image-retrieval' AND level = 1""",
    )[0][0] or 0
    (expected,) = query(
        root,
        """SELECT count(*) FROM product_predictions WHERE approach = 'image-retrieval'
           AND split_part(prediction, ' > ', 1) <> split_part(ground_truth_category, ' > ', 1)""",
    )[0]
    assert wrong_l1 == expected


def test_bad_input_fails_before_anything_is_written_and_keeps_the_results(evaluated, tmp_path, capsys):
    root, _ = evaluated
    before = query(root, "SELECT approach, count(*), sum(f1) FROM metrics GROUP BY ALL ORDER BY ALL")
    # a limit must be a positive whole number: refused before anything runs
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            eval_nli(["--model", TINY_NLI, "--limit", bad])
        assert "expected a positive whole number" in capsys.readouterr().err
    # every row's label is outside the taxonomy: the data run fails, the previous tables and results stay
    nothing_left = write_shard(tmp_path / "unknown.parquet", [product(truth="Nowhere > Else")])
    assert eval_nli(["--model", TINY_NLI, "--products", str(nothing_left)]) == 1
    assert "no row is left after cleaning" in capsys.readouterr().err
    # two rows share a product id: refused, naming it
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("\n".join(json.dumps({**row, "product_id": "same", "product_image": None}) for row in
                                  [product(image=None), product(title="Other", image=None)]))  # fmt: skip
    assert eval_nli(["--model", TINY_NLI, "--products", str(repeated)]) == 1
    assert "1 product_id values repeat (e.g. 'same')" in capsys.readouterr().err
    assert query(root, "SELECT approach, count(*), sum(f1) FROM metrics GROUP BY ALL ORDER BY ALL") == before
    assert query(root, "SELECT count(*) FROM products_experiment")[0][0] == len(ROWS)
