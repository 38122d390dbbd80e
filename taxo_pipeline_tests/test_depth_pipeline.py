"""TAXO_DEPTH=full end to end through Dagster and the real SIE server (all-MiniLM-L6-v2) on a small
subtree of the real taxonomy: the predictions reach below L3, the metrics and datasets say `full`, and
the depth-3 results, files and indexes of the same warehouse stay as they were, also after switching back."""

import hashlib

import dagster as dg
import duckdb
import pytest

from taxo_pipeline.definitions import defs
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline.evaluation.metrics import hierarchical_prf
from taxo_pipeline_tests.factories import SUBTREE_PRODUCTS, subtree_sources
from taxo_pipeline_tests.sie.sie_testkit import MINILM

SELECTION = ["raw_products", "raw_taxonomy", "clean_products_full_depth", "taxonomy_trimmed", "taxonomy_full_depth",
             "products_experiment", "category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]  # fmt: skip

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return subtree_sources(tmp_path_factory.mktemp("depth-sources"))


def _run(instance, env, depth: str | None) -> dg.ExecuteInProcessResult:
    if depth is None:
        env.delenv("TAXO_DEPTH", raising=False)
    else:
        env.setenv("TAXO_DEPTH", depth)
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=SELECTION, instance=instance, resources=pipeline_resources(),
        partition_key=dg.MultiPartitionKey({"model": MINILM, "variant": "full-path"}),
    )  # fmt: skip
    assert result.success
    return result


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _query(root, sql):
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_full_depth_end_to_end_next_to_depth_3(sources, sie_server, test_catalogue, tmp_path):
    data = tmp_path / "data"
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for name, value in {"TAXO_DATA_DIR": data, "TAXO_WAREHOUSE": tmp_path / "warehouse.duckdb",
                            "TAXO_PRODUCTS": sources / "products.jsonl", "TAXO_TAXONOMY": sources / "categories.txt",
                            "TAXO_MODELS": test_catalogue, "SIE_BASE_URL": sie_server}.items():  # fmt: skip
            env.setenv(name, str(value))
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        _run(instance, env, None)
        l3_files = {name: _sha(data / name) for name in ("shopify-taxonomy-l3.parquet", "shopify-products-experiment-l3.parquet")}
        l3_metrics = _query(tmp_path, "SELECT mode, scope, f1 FROM metrics ORDER BY ALL")
        full = _run(instance, env, "full")
        shown = {key: value.value for key, value in full.asset_materializations_for_node("taxonomy_trimmed")[0].metadata.items()}
        assert (shown["depth"], shown["total_nodes"], shown["l5_nodes"]) == ("full", 113, 7)
        assert {name: _sha(data / name) for name in l3_files} == l3_files  # depth 3's files untouched
        assert (data / "shopify-taxonomy-full.parquet").is_file() and (data / "shopify-products-experiment-full.parquet").is_file()

        datasets = dict(_query(tmp_path, "SELECT depth, dataset FROM datasets"))
        assert set(datasets) == {"3", "full"} and datasets["3"] != datasets["full"]
        scopes = _query(tmp_path, "SELECT depth, list(DISTINCT scope ORDER BY scope), count(*) FROM metrics GROUP BY 1 ORDER BY 1")
        assert scopes == [
            ("3", ["hierarchical", "macro_l1", "macro_l2", "macro_l3"], 8),
            ("full", ["hierarchical", "macro_l1", "macro_l2", "macro_l3", "macro_l4", "macro_l5"], 12),  # deepest label: L5
        ]
        top1 = _query(tmp_path, f"""SELECT p.category, e.ground_truth_category FROM predictions p
            JOIN products_experiment e USING (product_id) WHERE p.rank = 1 AND p.dataset = '{datasets["full"]}'
            ORDER BY product_id""")  # fmt: skip
        assert [truth for _, truth in top1] == [c for _, _, c in SUBTREE_PRODUCTS]  # the full-depth labels, untrimmed
        assert max(len(category.split(" > ")) for category, _ in top1) > 3  # predictions reach below L3
        (stored,) = _query(tmp_path, f"""SELECT f1 FROM metrics WHERE dataset = '{datasets["full"]}'
            AND mode = 'strict' AND scope = 'hierarchical'""")  # fmt: skip
        assert stored[0] == pytest.approx(hierarchical_prf(*zip(*top1)).f1)
        assert _query(tmp_path, "SELECT DISTINCT task, depth FROM leaderboard") == [("full-depth classification (hF1)", "full")]
        assert _query(tmp_path, "SELECT depth, count(*) FROM category_embeddings GROUP BY 1 ORDER BY 1") == [("3", 37), ("full", 113)]
        slug_dir = next((data / "chroma").iterdir())
        assert sorted(p.name for p in slug_dir.iterdir() if p.is_dir()) == ["full-path", "full-path-depth-full"]

        _run(instance, env, None)  # back to depth 3: its results come back the same, the full ones stay
        assert _query(tmp_path, "SELECT mode, scope, f1 FROM metrics WHERE depth = '3' ORDER BY ALL") == l3_metrics
        assert _query(tmp_path, "SELECT count(*) FROM metrics WHERE depth = 'full'") == [(12,)]
        assert {name: _sha(data / name) for name in l3_files} == l3_files
        assert _query(tmp_path, "SELECT DISTINCT task, depth FROM leaderboard") == [("L3 classification (hF1)", "3")]
