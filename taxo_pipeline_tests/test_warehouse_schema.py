"""The warehouse's schema version (warehouse/schema.py) on real DuckDB files: a warehouse from before
versions is migrated once, in order, and published; a new one starts at the latest version; one written
by a newer taxo-pipeline is refused, naming the file and both versions."""

import duckdb
import pyarrow as pa
import pytest

from taxo_pipeline.warehouse import schema, store
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.warehouse_testkit import earlier_warehouse

PRODUCTS = pa.table({"product_id": ["p1", "p2"], "ground_truth_category": ["A > B", "C"],
                     "potential_product_categories": [["C"], []]})  # fmt: skip
PREDICTIONS = pa.table({"approach": ["a", "a"], "model": ["m", "m"], "product_id": ["p1", "p2"], "rank": [1, 1],
                        "category": ["A > B", "A"], "dataset": ["d", "d"]})  # fmt: skip
# As an earlier version created them: the views read the tables under their old names.
OLD_VIEWS = {
    "product_predictions": "SELECT p.product_id, p.category = e.ground_truth_category AS correct_strict "
                           "FROM predictions p JOIN products_experiment_l3 e USING (product_id)",
    "confusions": "SELECT count(*) AS wrong FROM product_predictions WHERE NOT correct_strict",  # on a view
    "taxonomy_nodes": 'SELECT count(*) AS nodes FROM "taxonomy_l3" WHERE path LIKE \'A%\'',
    # on a view that is recreated too (and listed before it): recreated after it
    "labelled_nodes": "SELECT t.nodes, count(*) AS products FROM taxonomy_nodes t, products_experiment_l3 GROUP BY ALL",
}  # fmt: skip


def _earlier(tmp_path) -> Warehouse:
    return earlier_warehouse(tmp_path / "taxo.duckdb", {
        "taxonomy_l3": pa.table({"path": ["A", "A > B", "C"]}),
        "products_experiment_l3": PRODUCTS,
        "predictions": PREDICTIONS,
        "datasets": pa.table({"dataset": ["d"], "products": [2], "scope": ["full"]}),
        "metrics": pa.table({"approach": ["a"], "dataset": ["d"], "f1": [0.5]}),
        "calibrations": pa.table({"approach": ["a"], "weight_top1": [1.0]}),
        "published_calibrations": pa.table({"approach": ["a"], "weight_top1": [1.0]}),
    }, OLD_VIEWS)  # fmt: skip


def _state(con) -> dict:
    return {
        "tables": sorted(t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()),
        "versions": con.execute("SELECT version, migration FROM schema_version ORDER BY version").fetchall(),
        "views": con.execute("SELECT (SELECT list(correct_strict ORDER BY product_id) FROM product_predictions), "
                             "(SELECT wrong FROM confusions), (SELECT nodes FROM taxonomy_nodes), "
                             "(SELECT products FROM labelled_nodes)").fetchone(),
        "depth": con.execute("SELECT (SELECT list(depth) FROM metrics), (SELECT list(depth) FROM datasets)").fetchone(),
        "calibration": con.execute("SELECT (SELECT list(calibration) FROM calibrations), "
                                   "(SELECT list(calibration) FROM published_calibrations)").fetchone(),
    }  # fmt: skip


def test_an_earlier_warehouse_is_migrated_once_in_order_and_published(tmp_path, monkeypatch, caplog):
    warehouse = _earlier(tmp_path)
    with warehouse.connect(read_only=True) as con:  # the first connection migrates
        migrated = _state(con)
    assert migrated == {
        "tables": ["calibrations", "datasets", "metrics", "predictions", "products_experiment",
                   "published_calibrations", "schema_version", "taxonomy_trimmed"],
        "versions": [(number, description) for number, (description, _) in enumerate(schema.MIGRATIONS, start=1)],
        "views": ([True, False], 1, 2, 2),  # each view reads the renamed table
        "depth": (["3"], ["3"]),  # every row from before TAXO_DEPTH was at depth 3
        "calibration": ([None], [None]),  # fitted again when their metrics asset runs
    }  # fmt: skip
    assert schema.LATEST == 3 and "migrating" in caplog.text and str(warehouse.writer.path) in caplog.text
    with duckdb.connect(str(warehouse.path), read_only=True) as con:  # what readers open
        assert _state(con) == migrated

    # A second open, as by another process, finds the file current and writes nothing.
    monkeypatch.setattr(store, "_CURRENT", {})
    written = warehouse.writer.path.stat().st_mtime_ns, warehouse.path.stat().st_mtime_ns
    with warehouse.connect() as con:
        assert not schema.migrate(con, "the writer file")
        assert _state(con) == migrated
    assert (warehouse.writer.path.stat().st_mtime_ns, warehouse.path.stat().st_mtime_ns) == written


def test_a_table_written_under_the_new_name_replaces_the_stale_old_one(tmp_path):
    warehouse = earlier_warehouse(tmp_path / "taxo.duckdb", {
        "taxonomy_l3": pa.table({"path": ["old"]}), "taxonomy_trimmed": pa.table({"path": ["new"]})})  # fmt: skip
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall() == [
            ("schema_version",), ("taxonomy_trimmed",)]  # fmt: skip
        assert con.execute("SELECT path FROM taxonomy_trimmed").fetchall() == [("new",)]


def test_a_new_warehouse_starts_at_the_latest_version(tmp_path, caplog):
    warehouse = Warehouse(tmp_path / "taxo.duckdb")
    warehouse.replace_table("results", pa.table({"key": ["a"]}))
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        assert con.execute("SELECT version, migration FROM schema_version").fetchall() == [
            (schema.LATEST, "created at the latest version")]  # fmt: skip
    assert "migrating" not in caplog.text  # nothing to migrate


def test_a_failed_migration_leaves_the_file_at_the_last_version_it_completed(tmp_path, monkeypatch):
    def fails(con):
        con.execute("DROP TABLE predictions")
        raise RuntimeError("half-way")

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, ("a migration that fails", fails)))
    monkeypatch.setattr(schema, "LATEST", schema.LATEST + 1)
    warehouse = _earlier(tmp_path)
    with pytest.raises(RuntimeError, match="half-way"):
        warehouse.table_exists("predictions")
    with duckdb.connect(str(warehouse.writer.path), read_only=True) as con:
        assert schema.version(con) == schema.LATEST - 1  # the earlier migrations stay, each committed
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (2,)  # rolled back


def test_a_warehouse_from_a_newer_version_is_refused_naming_the_file_and_versions(tmp_path):
    warehouse = earlier_warehouse(tmp_path / "taxo.duckdb", {
        "schema_version": pa.table({"version": [schema.LATEST + 1], "migration": ["from the future"]})})  # fmt: skip
    with pytest.raises(schema.SchemaVersionError) as refused:
        warehouse.table_exists("schema_version")
    message = str(refused.value)
    assert str(warehouse.writer.path) in message and str(warehouse.path) in message
    assert f"schema version {schema.LATEST + 1}" in message and f"up to {schema.LATEST}" in message
    with duckdb.connect(str(warehouse.writer.path), read_only=True) as con:  # left as it was
        assert schema.version(con) == schema.LATEST + 1
