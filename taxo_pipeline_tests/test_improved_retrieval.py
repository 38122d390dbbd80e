"""The improved classifiers end to end through a real SIE server: all-MiniLM-L6-v2 on the real
sample rows next to the reference's text retrieval, on every category-document variant (full-depth:
every node of the full taxonomy), measured on all rows and on the evaluation protocol's test part; and
score fusion and the cascade picking up image scores from a tiny CLIP model."""

import math
from collections import defaultdict

import dagster as dg
import duckdb
import pytest

from taxo_pipeline.cli.arguments import approach_entry
from taxo_pipeline.cli.predict import build_parser, run_predict
from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline.evaluation.metrics import hierarchical_prf
from taxo_pipeline.evaluation.protocol import DEV, TEST, split_mask
from taxo_pipeline_tests.factories import (
    HATS,
    PANAMA,
    PANTS,
    RACKS,
    SAMPLE_PRODUCTS,
    SCARVES,
    TAXONOMY,
    product,
    write_shard,
)
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP

DATA = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
        "products_experiment"]  # fmt: skip
REFERENCE = ["category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]
# title-description runs per model x variant; the others name the documents they read, once per model
PER_VARIANT = ["title_description_predictions", "title_description_metrics"]
FUSED = [f"{name}_{kind}" for name in ("score_fusion", "hierarchical_cascade", "label_transfer") for kind in ("predictions", "metrics")]
APPROACHES = {
    "title-description": "title_description", "score-fusion": "score_fusion",
    "hierarchical-cascade": "hierarchical_cascade", "label-transfer": "label_transfer",
}  # fmt: skip
# the documents each approach reads once per model: its results' variant
DOCUMENTS = {"score-fusion": "both", "hierarchical-cascade": "full-depth", "label-transfer": "full-depth"}
SCOPES = {(m, s) for m in ("strict", "lenient") for s in ("hierarchical", "macro_l1", "macro_l2", "macro_l3")}
REFERENCE_KEY = ("text-retrieval", "full-path")
# strict hF1 on all 260 rows (the sample has no potentials: lenient is the same)
FIGURES = {
    REFERENCE_KEY: 0.342,
    ("text-retrieval", "full-depth"): 0.460,
    ("title-description", "full-path"): 0.389,
    ("title-description", "full-depth"): 0.523,
    ("score-fusion", "both"): 0.397,
    ("hierarchical-cascade", "full-depth"): 0.525,
    ("label-transfer", "full-depth"): 0.526,
}


def _environment(env: pytest.MonkeyPatch, root, products, sie_server, test_catalogue) -> None:
    for name, value in {
        "TAXO_DATA_DIR": root / "data", "TAXO_WAREHOUSE": root / "warehouse.duckdb", "TAXO_PRODUCTS": products,
        "TAXO_TAXONOMY": TAXONOMY, "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server,
    }.items():  # fmt: skip  (DAGSTER_HOME is instance_for_test's to set and restore)
        env.setenv(name, str(value))


def _materialize(instance, selection, partition_key) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=selection, instance=instance, partition_key=partition_key,
        resources=pipeline_resources(),
    )  # fmt: skip


def variant_key(model, variant="full-path") -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "variant": variant})


@pytest.fixture(scope="module")
def minilm(sie_server, test_catalogue, tmp_path_factory):
    """The data, the reference's text retrieval and title-description for MiniLM full-path, the leaf
    index, the full-depth index with text retrieval and title-description on it, then the three
    approaches that run once per model: {asset: its materialization's metadata} (title-description's:
    full-path; category_embeddings': full-depth)."""
    root = tmp_path_factory.mktemp("improved")
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        _environment(env, root, SAMPLE_PRODUCTS, sie_server, test_catalogue)
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        runs = [
            _materialize(instance, [*DATA, *REFERENCE, *PER_VARIANT], variant_key(MINILM)),
            _materialize(instance, ["category_embeddings"], variant_key(MINILM, "leaf")),
            _materialize(instance, [*REFERENCE, *PER_VARIANT], variant_key(MINILM, "full-depth")),
            _materialize(instance, FUSED, MINILM),
        ]
        assert all(run.success for run in runs)
        shown = {(runs[0], asset) for asset in PER_VARIANT} | {(runs[2], "category_embeddings")}
        yield root, {
            asset: {k: v.value for k, v in run.asset_materializations_for_node(asset)[0].metadata.items()}
            for run, asset in (*shown, *((runs[3], asset) for asset in FUSED))
        }  # fmt: skip


def query(root, sql, params=()):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def metadata(result, asset):
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def hf1(root, approach, variant="full-path", mode="strict"):
    ((f1,),) = query(
        root, "SELECT f1 FROM metrics WHERE approach = ? AND model = ? AND variant = ? AND mode = ? "
        "AND scope = 'hierarchical'", [approach, MINILM, variant, mode],
    )  # fmt: skip
    return f1


def test_each_approach_stores_top5_predictions_and_every_metric_row(minilm):
    root, shown = minilm
    for approach, slug in APPROACHES.items():
        rows = query(
            root, "SELECT variant, mode, scope, count, evaluation, latency_p50_ms FROM metrics WHERE approach = ? AND model = ?",
            [approach, MINILM],
        )
        variants = ["full-path", "full-depth"] if approach == "title-description" else [DOCUMENTS[approach]]
        assert {(mode, scope) for _, mode, scope, *_ in rows} == SCOPES
        # the approaches that run once per model have one set of figures, under the documents they read
        assert {(variant, count, evaluation) for variant, _, _, count, evaluation, _ in rows} == {
            (variant, 260, "5-fold cv" if approach == "label-transfer" else "zero-shot") for variant in variants
        }  # fmt: skip
        assert all(p50 > 0 for *_, p50 in rows)
        assert query(
            root, "SELECT variant, count(DISTINCT product_id), min(rank), max(rank) FROM predictions WHERE approach = ? "
            "GROUP BY variant ORDER BY variant", [approach]
        ) == [(variant, 260, 1, 5) for variant in sorted(variants)]  # fmt: skip
        figures = shown[f"{slug}_metrics"]
        assert figures["count"] == 260 and figures["strict_hf1"] == pytest.approx(hf1(root, approach, variants[0]))
        assert figures["lenient_hf1"] == pytest.approx(hf1(root, approach, variants[0], "lenient"))
        assert shown[f"{slug}_predictions"]["dagster/row_count"] == 260 * 5


def test_every_approach_and_variant_on_all_rows(minilm):
    root, _ = minilm
    figures = {key: hf1(root, *key) for key in FIGURES}
    assert figures == {key: pytest.approx(value, abs=0.01) for key, value in FIGURES.items()}


def top1_by_part(root) -> dict[tuple[str, str], dict[str, tuple[list[str], list[str]]]]:
    """{(approach, variant): {part: (top-1 predictions, ground truths)}} from the stored predictions."""
    rows = query(
        root, "SELECT p.approach, p.variant, p.product_id, p.category, e.ground_truth_category FROM predictions p "
        "JOIN products_experiment e USING (product_id) WHERE p.rank = 1 AND p.model = ? ORDER BY ALL", [MINILM],
    )  # fmt: skip
    grouped = defaultdict(list)
    for approach, variant, *row in rows:
        grouped[approach, variant].append(row)
    parts = {}
    for key, products in grouped.items():
        ids = [product_id for product_id, _, _ in products]
        parts[key] = {
            part: tuple(zip(*(p[1:] for p, keep in zip(products, split_mask(ids, part)) if keep))) for part in (DEV, TEST)
        }
    return parts


def test_the_approaches_chosen_on_the_dev_part_clear_the_bars_on_the_test_part(minilm):
    root, _ = minilm
    parts = top1_by_part(root)
    hf1s = {key: {part: hierarchical_prf(*by_part[part]).f1 for part in (DEV, TEST)} for key, by_part in parts.items()}
    ratios = {key: {part: f1[part] / hf1s[REFERENCE_KEY][part] for part in (DEV, TEST)} for key, f1 in hf1s.items()}
    assert hf1s[REFERENCE_KEY] == {DEV: pytest.approx(0.397, abs=0.01), TEST: pytest.approx(0.283, abs=0.01)}
    zero_shot = {(a, v) for a, v in query(root, "SELECT DISTINCT approach, variant FROM metrics WHERE evaluation = 'zero-shot'")}
    candidates = [key for key in ratios if key != REFERENCE_KEY]
    # the choice is made on the dev part; the bars are checked on the test part, which no choice looked at
    best_zero_shot = max((key for key in candidates if key in zero_shot), key=lambda key: ratios[key][DEV])
    best = max(candidates, key=lambda key: ratios[key][DEV])
    assert ratios[best_zero_shot][TEST] >= 1.25, (best_zero_shot, ratios)
    assert ratios[best][TEST] >= 1.30, (best, ratios)
    # the gain comes from the full-depth documents: every approach gains on them, on both parts
    for approach in ("text-retrieval", "title-description"):
        assert all(ratios[approach, "full-depth"][part] > ratios[approach, "full-path"][part] for part in (DEV, TEST))
    assert best_zero_shot[1] == best[1] == "full-depth"


def test_queries_are_encoded_once_in_large_batches_and_shared(minilm):
    root, shown = minilm
    predictions = [shown[f"{slug}_predictions"] for slug in APPROACHES.values()]
    # title-description ran first and encoded the 260 title + description queries in requests of 64;
    # the others read them, and the documents of every variant they read, from the embedding cache
    assert [m["sie_requests"] for m in predictions] == [5, 0, 0, 0]
    assert all(m["from_embedding_cache"] >= 260 for m in predictions[1:])
    for approach in APPROACHES:
        variant = DOCUMENTS.get(approach, "full-path")
        assert query(
            root, "SELECT count(*), max(batch_size) FROM request_latencies WHERE approach = ? AND variant = ? "
            "AND stage = 'query_encode'", [approach, variant],
        ) == [(5, 64)]  # fmt: skip
    # the reference reproduction keeps its batches of 8
    assert query(
        root, "SELECT count(*), max(batch_size) FROM request_latencies WHERE approach = 'text-retrieval' "
        "AND variant = 'full-path' AND stage = 'query_encode'"
    ) == [(33, 8)]  # fmt: skip
    # the full-depth index: every category of the full taxonomy; its L1-L3 full paths were already cached
    index = shown["category_embeddings"]
    assert (index["dagster/row_count"], index["from_embedding_cache"]) == (14_606, 1_863)
    assert index["sie_requests"] == math.ceil((14_606 - 1_863) / 64)


def test_fusion_reads_full_path_and_leaf_the_cascade_full_depth_and_label_transfer_reports_its_folds(minilm):
    _, shown = minilm
    fusion = shown["score_fusion_predictions"]
    assert fusion["fused_sources"] == "text full-path, text leaf" and fusion["image_products_fused"] == 0
    cascade = shown["hierarchical_cascade_predictions"]
    assert cascade["fused_sources"] == shown["label_transfer_predictions"]["fused_sources"] == "text full-depth"
    assert cascade["l1_differs_from_hard_cascade"] >= 0
    transfer = shown["label_transfer_predictions"]
    assert shown["label_transfer_metrics"]["evaluation"] == "5-fold cv" and transfer["neighbours"] == 10
    folds = [line.split("|")[1:4] for line in transfer["vote_weight_per_fold"].splitlines()[2:]]
    assert sorted(int(f) for f, _, _ in folds) == [0, 1, 2, 3, 4]
    assert sum(int(n) for _, n, _ in folds) == 260


ROWS = [
    product("Panama hat", "Handwoven straw Panama hat with a cotton ribbon.", PANAMA, (HATS,), color=(220, 200, 120)),
    product("Silk scarf", "A light silk scarf with a floral print.", SCARVES, (SCARVES,), color=(200, 30, 60)),
    product("Chinos", "Slim cotton chino pants for every day.", PANTS, (PANTS,), color=(150, 120, 80)),
    product("Hat rack", "Wall-mounted oak rack for coats and hats.", RACKS, (RACKS, HATS), color=(90, 60, 30)),
    product("Wool beanie", "A warm knitted wool beanie.", HATS, (HATS,), color=(40, 40, 160)),
    product("Broken", "A product whose image is corrupt.", PANTS, (PANTS,), image={"bytes": b"\xff\xd8 not a jpeg", "path": "x.jpg"}),
]


def test_an_image_model_adds_its_image_scores_to_fusion_and_cascade(sie_server, test_catalogue, tmp_path):
    image_retrieval = ["category_embeddings", "image_retrieval_predictions"]
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        _environment(env, tmp_path, write_shard(tmp_path / "shard.parquet", ROWS), sie_server, test_catalogue)
        instance.add_dynamic_partitions("encoder_model", [TINY_CLIP])
        _materialize(instance, [*DATA, *image_retrieval], variant_key(TINY_CLIP))
        _materialize(instance, ["category_embeddings"], variant_key(TINY_CLIP, "leaf"))
        fused = _materialize(instance, ["score_fusion_predictions", "score_fusion_metrics"], TINY_CLIP)
        _materialize(instance, image_retrieval, variant_key(TINY_CLIP, "full-depth"))
        cascade = _materialize(instance, ["hierarchical_cascade_predictions"], TINY_CLIP)
    fusion = metadata(fused, "score_fusion_predictions")
    assert fusion["fused_sources"] == "text full-path, text leaf, image full-path, image leaf"
    assert fusion["image_products_fused"] == 5  # every product but the one whose image does not decode
    assert metadata(fused, "score_fusion_metrics")["count"] == 6
    # image and category vectors came from the embedding cache; only the title + description queries were new
    assert fusion["sie_requests"] == 1
    cascaded = metadata(cascade, "hierarchical_cascade_predictions")
    assert (cascaded["fused_sources"], cascaded["image_products_fused"]) == ("text full-depth, image full-depth", 5)
    assert cascaded["sie_requests"] == 0
    # image retrieval on full-depth answers with the L1-L3 nodes of the deepest matches, 5 per product
    assert query(
        tmp_path, "SELECT count(DISTINCT product_id), count(*), max(len(string_split(category, ' > '))) FROM predictions "
        "WHERE approach = 'image-retrieval' AND variant = 'full-depth'",
    ) == [(5, 25, 3)]  # fmt: skip


def test_predict_with_label_transfer_lets_every_labelled_product_vote(minilm, capsys):
    # a product outside the pool (the command line's) classified on the full-depth cascade plus the votes
    # of the 260 labelled products, with the vote weight cross-validated on them alone
    predict = approach_entry("label-transfer", "predict-label-transfer", build_parser, run_predict)
    assert predict(["--model", MINILM, "--title", "Panama hat", "--description", ROWS[0]["product_description"]]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    ranked = [path for path, _ in lines if not path.endswith("_latency_ms")]
    assert len(ranked) == 5 and ranked[0] == HATS
