"""The improved classifiers end to end through a real SIE server: all-MiniLM-L6-v2 on the real
sample rows next to the reference's text retrieval, and score fusion picking up image scores from
a tiny CLIP model when an image-retrieval partition exists."""

import math

import dagster as dg
import duckdb
import pytest

from taxo_pipeline.definitions import defs
from taxo_pipeline.sie.resource import pipeline_resources
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

DATA = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_l3", "products_experiment_l3"]
REFERENCE = ["category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]
IMPROVED = ["title_description_retrieval", "score_fusion_retrieval", "hierarchical_cascade_retrieval", "label_transfer_retrieval"]
APPROACHES = {
    "title-description": "title_description_retrieval", "score-fusion": "score_fusion_retrieval",
    "hierarchical-cascade": "hierarchical_cascade_retrieval", "label-transfer": "label_transfer_retrieval",
}  # fmt: skip
SCOPES = {(m, s) for m in ("strict", "lenient") for s in ("hierarchical", "macro_l1", "macro_l2", "macro_l3")}


def _environment(env: pytest.MonkeyPatch, root, products, sie_server, test_catalogue) -> None:
    for name, value in {
        "TAXO_DATA_DIR": root / "data", "TAXO_WAREHOUSE": root / "warehouse.duckdb", "TAXO_PRODUCTS": products,
        "TAXO_TAXONOMY": TAXONOMY, "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server,
    }.items():  # fmt: skip  (DAGSTER_HOME is instance_for_test's to set and restore)
        env.setenv(name, str(value))


def _materialize(instance, selection, model, variant="full-path") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
        partition_key=dg.MultiPartitionKey({"model": model, "variant": variant}),
        resources=pipeline_resources(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def minilm(sie_server, test_catalogue, tmp_path_factory):
    """One run: the data, the reference's text retrieval and the four approaches, MiniLM full-path."""
    root = tmp_path_factory.mktemp("improved")
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        _environment(env, root, SAMPLE_PRODUCTS, sie_server, test_catalogue)
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        result = _materialize(instance, [*DATA, *REFERENCE, *IMPROVED], MINILM)
        yield root, result


def query(root, sql, params=()):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def metadata(result, asset):
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def hf1(root, approach, mode="strict"):
    ((f1,),) = query(
        root, "SELECT f1 FROM metrics WHERE approach = ? AND model = ? AND variant = 'full-path' AND mode = ? "
        "AND scope = 'hierarchical'", [approach, MINILM, mode],
    )  # fmt: skip
    return f1


def test_each_approach_stores_top5_predictions_and_every_metric_row(minilm):
    root, result = minilm
    assert result.success
    for approach, asset in APPROACHES.items():
        rows = query(
            root, "SELECT mode, scope, count, evaluation, latency_p50_ms FROM metrics WHERE approach = ? AND model = ?",
            [approach, MINILM],
        )
        assert {(mode, scope) for mode, scope, *_ in rows} == SCOPES
        assert {(count, evaluation) for _, _, count, evaluation, _ in rows} == {
            (260, "5-fold cv" if approach == "label-transfer" else "zero-shot")
        }
        assert all(p50 > 0 for *_, p50 in rows)
        assert query(
            root, "SELECT count(DISTINCT product_id), min(rank), max(rank) FROM predictions WHERE approach = ?", [approach]
        ) == [(260, 1, 5)]
        shown = metadata(result, asset)
        assert shown["count"] == 260 and shown["strict_hf1"] == pytest.approx(hf1(root, approach))
        assert shown["lenient_hf1"] == pytest.approx(hf1(root, approach, "lenient"))
        assert "| text-retrieval |" in shown["vs_reference"] and f"| {approach} |" in shown["vs_reference"]


def test_the_best_approach_beats_the_reference_by_a_quarter(minilm):
    root, _ = minilm
    reference = hf1(root, "text-retrieval")
    assert reference == pytest.approx(0.342, abs=0.01)  # the reference method on these 260 rows
    scores = {approach: hf1(root, approach) for approach in APPROACHES}
    assert scores["title-description"] > reference
    assert max(scores.values()) >= 1.25 * reference, scores
    assert scores["label-transfer"] == max(scores.values())


def test_queries_are_encoded_once_in_large_batches_and_shared(minilm):
    root, result = minilm
    shown = [metadata(result, asset) for asset in IMPROVED]
    # whichever approach ran first encoded the 260 title + description queries; the others read the cache
    assert sorted(m["queries_from_embedding_cache"] for m in shown) == [0, 260, 260, 260]
    # 260 queries in requests of 64, plus the leaf documents once (only full-path was indexed); the
    # cache sends each distinct text once, and an L1 node's leaf document is its full path
    ((new_leaves,),) = query(root, "SELECT count(DISTINCT name) FROM taxonomy_l3 WHERE name NOT IN (SELECT path FROM taxonomy_l3)")
    assert new_leaves > 1000
    assert sum(m["sie_requests"] for m in shown) == 5 + math.ceil(new_leaves / 64)
    for approach in APPROACHES:
        assert query(
            root, "SELECT count(*), max(batch_size) FROM request_latencies WHERE approach = ? AND stage = 'query_encode'",
            [approach],
        ) == [(5, 64)]
    # the reference reproduction keeps its batches of 8
    assert query(
        root, "SELECT count(*), max(batch_size) FROM request_latencies WHERE approach = 'text-retrieval' AND stage = 'query_encode'"
    ) == [(33, 8)]


def test_fusion_without_images_fuses_both_variants_and_label_transfer_reports_its_folds(minilm):
    root, result = minilm
    fusion = metadata(result, "score_fusion_retrieval")
    assert fusion["fused_sources"] == "text full-path, text leaf" and fusion["image_products_fused"] == 0
    cascade = metadata(result, "hierarchical_cascade_retrieval")
    assert 0 < cascade["hard_cascade_strict_hf1"] < 1 and cascade["l1_differs_from_hard_cascade"] >= 0
    transfer = metadata(result, "label_transfer_retrieval")
    assert transfer["evaluation"] == "5-fold cv" and transfer["neighbours"] == 10
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


def test_score_fusion_adds_image_scores_once_image_retrieval_exists(sie_server, test_catalogue, tmp_path):
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        _environment(env, tmp_path, write_shard(tmp_path / "shard.parquet", ROWS), sie_server, test_catalogue)
        instance.add_dynamic_partitions("encoder_model", [TINY_CLIP])
        text_only = _materialize(instance, [*DATA, "category_embeddings", "score_fusion_retrieval"], TINY_CLIP)
        assert metadata(text_only, "score_fusion_retrieval")["image_products_fused"] == 0
        with_images = _materialize(instance, ["image_retrieval_predictions", "score_fusion_retrieval"], TINY_CLIP)
    fusion = metadata(with_images, "score_fusion_retrieval")
    assert fusion["fused_sources"] == "text full-path, text leaf, image"
    assert fusion["image_products_fused"] == 5  # every product but the one whose image does not decode
    assert fusion["count"] == 6 and fusion["sie_requests"] == 0  # image vectors came from the embedding cache
