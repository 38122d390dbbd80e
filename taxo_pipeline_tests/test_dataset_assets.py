"""The data assets materialized through Dagster on the real offline files, and bad input."""

import http.server
import json
import threading

import dagster as dg
import duckdb
import pytest

from taxo_pipeline.dataset.fetch import resolve_source
from taxo_pipeline.dataset.tables import load_taxonomy_full_depth
from taxo_pipeline.dataset.taxonomy import parse_categories
from taxo_pipeline.defs.ingest import assets as dataset
from taxo_pipeline.defs.ingest import checks
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline_tests.factories import HATS, PANAMA, SAMPLE_PRODUCTS, TAXONOMY, product, write_shard

ASSETS = [*dg.load_assets_from_modules([dataset]), *checks.checks]


def materialize(run_config=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS, resources={"storage": WorkspaceResource()}, run_config=run_config, raise_on_error=False
    )


@pytest.fixture(autouse=True)
def full_taxonomy(workspace, monkeypatch):
    """These tests check the seed rules' figures on the whole real taxonomy."""
    monkeypatch.setenv("TAXO_TAXONOMY", str(TAXONOMY))


def independent_experiment_rows() -> dict[str, str]:
    """seed-rules.md reimplemented directly on the sample: product id -> trimmed ground truth."""
    valid = set()
    for line in TAXONOMY.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            valid.add(line.split(" : ")[1].strip())
    expected = {}
    for line in SAMPLE_PRODUCTS.read_text().splitlines():
        row = json.loads(line)
        title, desc, truth = (str(row.get(k) or "").strip() for k in ("product_title", "product_description", "ground_truth_category"))
        if title and desc and truth and truth in valid:
            expected[f"{row['split']}-{row['row_index']}"] = " > ".join(p.strip() for p in truth.split(" > ")[:3])
    return expected


def warehouse_snapshot(workspace):
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }


def test_sample_materializes_to_the_seed_rules_result(workspace, shared_data):
    result = materialize()
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    expected = independent_experiment_rows()
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        rows = dict(con.execute("SELECT product_id, ground_truth_category FROM products_experiment").fetchall())
        l1, total = con.execute("SELECT count(*) FILTER (level = 1), count(*) FROM taxonomy_trimmed").fetchone()
    assert rows == expected and len(rows) == 260
    assert (l1, total) == (26, 1863)
    for name in ("shopify-products-clean-full-depth", "shopify-taxonomy-l3", "shopify-taxonomy-full-depth",
                 "shopify-products-experiment-l3"):  # fmt: skip
        assert (workspace / "data" / f"{name}.parquet").is_file()

    clean = result.asset_materializations_for_node("clean_products_full_depth")[0].metadata
    assert clean["rows_in"].value == 322
    assert clean["dropped_empty_description"].value == 26
    assert clean["rows_out"].value == 260
    taxonomy = result.asset_materializations_for_node("taxonomy_trimmed")[0].metadata
    assert (taxonomy["l1_nodes"].value, taxonomy["l2_nodes"].value, taxonomy["total_nodes"].value) == (26, 218, 1863)
    # issue 32: the catalogue views are in the published copy from the first materialization, without rows
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        counts = [con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] for view in ("classifications", "review_queue")]
        views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert counts == [0, 0] and {"classifications", "review_queue"} <= views


def test_the_full_depth_taxonomy_holds_every_category_for_the_full_depth_documents(workspace, shared_data):
    result = materialize()
    assert result.success
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        levels = con.execute("SELECT level, count(*) FROM taxonomy_full_depth GROUP BY level ORDER BY level").fetchall()
        panama = con.execute("SELECT name, level, parent, l1 FROM taxonomy_full_depth WHERE path = ?", [PANAMA]).fetchall()
    assert levels == list(zip(range(1, 9), [26, 218, 1_619, 4_704, 5_159, 2_252, 557, 71]))
    assert panama == [("Panama Hats", 4, HATS, "Apparel & Accessories")]
    shown = result.asset_materializations_for_node("taxonomy_full_depth")[0].metadata
    assert (shown["total_nodes"].value, shown["l4_nodes"].value, shown["l8_nodes"].value) == (14_606, 4_704, 71)
    categories = load_taxonomy_full_depth(WorkspaceResource().workspace())
    assert categories == sorted(set(parse_categories(TAXONOMY))) and len(categories) == 14_606
    # the L1-L3 variants' documents never read it
    assert load_taxonomy_full_depth(WorkspaceResource().workspace(), "full-path") is None


def test_shard_with_images_and_potentials_keeps_them(workspace):
    shard = write_shard(workspace / "shard.parquet", [product(), product(title="No image", image=None)])
    result = materialize({"ops": {"raw_products": {"config": {"source": str(shard)}}}})
    assert result.success
    with duckdb.connect(str(workspace / "warehouse" / "taxo.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT product_id, ground_truth_category, potential_product_categories, has_image FROM products_experiment"
        ).fetchall()
    assert rows == [("0", HATS, [HATS], True)]
    assert PANAMA not in rows[0][2]


def _run_fails_and_keeps_warehouse(workspace, run_config, message):
    assert materialize().success
    before = warehouse_snapshot(workspace)
    files_before = {p.name: p.read_bytes() for p in (workspace / "data").glob("*.parquet")}
    result = materialize(run_config)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert message in failure.step_failure_data.error.to_string()
    assert warehouse_snapshot(workspace) == before
    assert {p.name: p.read_bytes() for p in (workspace / "data").glob("*.parquet")} == files_before


def test_corrupt_parquet_fails_clearly_and_writes_nothing(workspace):
    corrupt = workspace / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + b"\x00" * 100 + b"PAR1")
    _run_fails_and_keeps_warehouse(
        workspace,
        {"ops": {"raw_products": {"config": {"source": str(corrupt)}}}},
        f"products file {corrupt} is not a readable Parquet file",
    )


def test_malformed_taxonomy_fails_clearly_and_writes_nothing(workspace):
    bad = workspace / "categories.txt"
    bad.write_text(TAXONOMY.read_text()[:5000] + "\nthis line has no separator\n")
    _run_fails_and_keeps_warehouse(
        workspace, {"ops": {"raw_taxonomy": {"config": {"source": str(bad)}}}}, "expected '<gid> : <path>'"
    )


def test_missing_products_file_names_the_path_and_env_var(workspace):
    missing = workspace / "nope.jsonl"
    _run_fails_and_keeps_warehouse(
        workspace,
        {"ops": {"raw_products": {"config": {"source": str(missing)}}}},
        f"products file {missing} does not exist (set TAXO_PRODUCTS",
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"gid://shopify/TaxonomyCategory/aa : Apparel & Accessories\n"

    def do_GET(self):
        self.send_response(200)
        if self.path == "/truncated.txt":  # promises more bytes than it sends
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(self.body)
            return
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_is_cached_and_atomic(tmp_path, http_server):
    kwargs = dict(what="taxonomy", env_var="TAXO_TAXONOMY", cache_dir=tmp_path, cache_name="cats.txt")
    path = resolve_source(f"{http_server}/cats.txt", **kwargs)
    assert path == tmp_path / "cats.txt" and path.read_bytes() == _Handler.body
    path.write_text("cached copy")  # a second call must not download again
    assert resolve_source(f"{http_server}/cats.txt", **kwargs).read_text() == "cached copy"
    assert resolve_source(f"{http_server}/cats.txt", refresh=True, **kwargs).read_bytes() == _Handler.body

    with pytest.raises(InputError, match="could not download taxonomy"):
        resolve_source(f"{http_server}/truncated.txt", what="taxonomy", env_var="TAXO_TAXONOMY", cache_dir=tmp_path, cache_name="t.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cats.txt"]  # no half file left


def test_unreachable_url_says_how_to_use_a_local_file(tmp_path):
    with pytest.raises(InputError, match=r"could not download products from http://127.0.0.1:9/x.parquet: .*set TAXO_PRODUCTS=/path/to/file"):
        resolve_source("http://127.0.0.1:9/x.parquet", what="products", env_var="TAXO_PRODUCTS", cache_dir=tmp_path, cache_name="x.parquet")
