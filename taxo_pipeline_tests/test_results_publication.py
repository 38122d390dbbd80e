"""A rerun's results become visible only when whole (evaluation/publication.py): readers of the leaderboard,
choose(), the calibration, the held-out confidences and the published state keep the last complete result
while a rerun is half-way, and see the new figures together once every partition of the change is written.

Hand-made warehouses on real DuckDB files, no SIE server: each partition is the pipeline's own steps
(save_results, score_and_store, save_calibration) and refresh_views, which the metrics asset calls last.
"""

from pathlib import Path

import duckdb
import pytest

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.classification.coverage import held_out, review_threshold
from taxo_pipeline.classification.evaluated import choose, load_calibration, save_calibration
from taxo_pipeline.evaluation.evaluate import score_and_store
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.publication import publish_if_whole, refresh_views, settings_fingerprint
from taxo_pipeline.evaluation.store import save_results
from taxo_pipeline.sie.model_catalogue import Catalogue, ModelSpec
from taxo_pipeline.warehouse.publication import published_state
from taxo_pipeline.warehouse.results import clear_results
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.workspace import Workspace

ENC, OTHER = "org/enc", "org/other"
TRUTHS = ["A > B > C", "A > B > D", "E > F > G", "E > H > I"] * 3  # 12 products, p00..p11
IDS = [f"p{i:02d}" for i in range(len(TRUTHS))]
RETRIEVAL = approach_named("text-retrieval")


def spec(model: str, enabled: bool = True, length: int = 256) -> ModelSpec:
    """A text model; `length` stands for any setting: another value is another fingerprint."""
    return ModelSpec(model, "text", "1M", enabled, {"tasks": {"encode": {}}, "profiles": {}, "max_sequence_length": length})


def catalogue(*specs: ModelSpec) -> Catalogue:
    return Catalogue(Path("models.yaml"), specs)


CATALOGUE = catalogue(spec(ENC), spec(OTHER))
# Three leaderboard rows: two of ENC (one model change reruns both), one of OTHER.
ENC_PATH, ENC_LEAF = ResultKey("text-retrieval", ENC, "full-path"), ResultKey("text-retrieval", ENC, "leaf")
OTHER_PATH = ResultKey("text-retrieval", OTHER, "full-path")


def ranked(right: int) -> list[list[tuple[str, float]]]:
    """The first `right` products' top category is their truth; the others' a wrong path. Scores fall with
    the product number, right ones higher, so the calibration has something to fit."""
    rows = []
    for i, truth in enumerate(TRUTHS):
        wrong = "E > F > G" if truth.startswith("A") else "A > B > C"
        first, second = (truth, wrong) if i < right else (wrong, truth)
        rows.append([(first, 0.9 - 0.01 * i if i < right else 0.6 - 0.01 * i), (second, 0.3)])
    return rows


def hf1(right: int) -> float:
    """Strict hierarchical F1 of ranked(right): each 3-level path right or sharing no level."""
    return right / len(TRUTHS)


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "taxo.duckdb")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE products_experiment (product_id VARCHAR, product_title VARCHAR, "
                    "product_description VARCHAR, ground_truth_category VARCHAR, potential_product_categories VARCHAR[])")  # fmt: skip
        con.executemany("INSERT INTO products_experiment VALUES (?, 't', 'd', ?, [])", list(zip(IDS, TRUTHS)))
    return warehouse


def predict(warehouse: Warehouse, key: ResultKey, right: int, dataset: str = "d1", models: Catalogue = CATALOGUE) -> None:
    """A predictions partition: the key's top-k rewritten, with the model settings of `models`."""
    fingerprint = settings_fingerprint(models, key.model, key.reranker)
    save_results(warehouse, key.on(dataset), IDS, ranked(right), {}, products=len(IDS), scope="full",
                 model_fingerprint=fingerprint)  # fmt: skip


def score(warehouse: Warehouse, key: ResultKey, dataset: str = "d1", models: Catalogue = CATALOGUE,
          calibrate: bool = True) -> bool:  # fmt: skip
    """A metrics partition, as score_partition runs it: metrics, calibration, then refresh_views (which
    publishes when whole); whether it published."""
    score_and_store(warehouse, RETRIEVAL, key.on(dataset), ["A", "E"])
    if calibrate:
        save_calibration(warehouse, key.on(dataset))
    return refresh_views(warehouse, models)


def run(warehouse: Warehouse, key: ResultKey, right: int, dataset: str = "d1", models: Catalogue = CATALOGUE) -> bool:
    predict(warehouse, key, right, dataset, models)
    return score(warehouse, key, dataset, models)


def board(warehouse: Warehouse) -> list[tuple]:
    """The leaderboard as a reader of the published file sees it: (model, variant, strict, dataset)."""
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        rows = con.execute("SELECT model, variant, strict, dataset FROM leaderboard").fetchall()
    return sorted((m, v, round(s, 6), d) for m, v, s, d in rows)


def best(warehouse: Warehouse, models: Catalogue = CATALOGUE) -> tuple[ResultKey, float]:
    workspace = Workspace.from_env({}).with_paths(warehouse=warehouse.path)
    choice = choose(workspace, [s.id for s in models.enabled()], None, None, None)
    return choice.key, round(choice.strict_f1, 6)


def evaluated(warehouse: Warehouse) -> None:
    """Three complete results on d1: ENC full-path 9/12 right, ENC leaf 6/12, OTHER full-path 3/12."""
    assert [run(warehouse, k, right) for k, right in ((ENC_PATH, 9), (ENC_LEAF, 6), (OTHER_PATH, 3))] == [True] * 3


FIRST = [(ENC, "full-path", 0.75, "d1"), (ENC, "leaf", 0.5, "d1"), (OTHER, "full-path", 0.25, "d1")]


def test_the_first_run_publishes_each_result_as_it_completes(warehouse):
    assert run(warehouse, ENC_PATH, 9)
    assert board(warehouse) == [(ENC, "full-path", 0.75, "d1")]
    assert hf1(9) == 0.75 and best(warehouse) == (ENC_PATH.on("d1"), 0.75)
    evaluated(warehouse)
    assert board(warehouse) == FIRST
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        settings = con.execute("SELECT model, variant, model_fingerprint FROM published_result_settings "
                               "ORDER BY ALL").fetchall()  # fmt: skip
        coverage = con.execute("SELECT count(DISTINCT model || variant) FROM precision_at_coverage").fetchone()
    assert {"published_metrics", "published_calibrations", "published_heldout_confidences",
            "published_result_settings", "publication"} <= tables  # fmt: skip
    enc, other = settings_fingerprint(CATALOGUE, ENC), settings_fingerprint(CATALOGUE, OTHER)
    assert enc != other and settings == [(ENC, "full-path", enc), (ENC, "leaf", enc), (OTHER, "full-path", other)]
    assert coverage == (3,)
    state = published_state(warehouse, ENC_PATH.on("d1"))
    assert state.model_fingerprint == enc and state.fitted_at >= state.computed_at


def test_a_key_rewritten_but_not_yet_scored_keeps_its_old_figures_until_metrics_and_calibration(warehouse):
    evaluated(warehouse)
    key = OTHER_PATH.on("d1")
    old_state, old_calibration = published_state(warehouse, key), load_calibration(warehouse, key)
    old_threshold = review_threshold(warehouse, key, 0.5)
    # OTHER's rerun gets 11 of 12 right: it would lead. Its predictions are written, its metrics not yet;
    # another partition completes meanwhile (its refresh_views finds the results not whole)
    predict(warehouse, OTHER_PATH, 11)
    assert not refresh_views(warehouse, CATALOGUE)
    assert board(warehouse) == FIRST  # all three rows, old figures (the working table lost OTHER's metrics)
    assert best(warehouse) == (ENC_PATH.on("d1"), 0.75)
    assert load_calibration(warehouse, key) == old_calibration and published_state(warehouse, key) == old_state
    assert review_threshold(warehouse, key, 0.5) == old_threshold
    # metrics written, calibration not yet: still the old result (a calibration from other predictions)
    assert not score(warehouse, OTHER_PATH, calibrate=False)
    assert board(warehouse) == FIRST and best(warehouse) == (ENC_PATH.on("d1"), 0.75)
    assert published_state(warehouse, key) == old_state
    confidence, _ = held_out(warehouse, key)
    assert confidence.tolist() == held_out(warehouse, key, published=False)[0].tolist()  # held-out: not rewritten yet
    # the calibration: whole, published together
    calibration = save_calibration(warehouse, key)
    assert refresh_views(warehouse, CATALOGUE)
    assert board(warehouse) == [(ENC, "full-path", 0.75, "d1"), (ENC, "leaf", 0.5, "d1"), (OTHER, "full-path", 0.916667, "d1")]
    assert best(warehouse) == (key, round(hf1(11), 6))
    assert load_calibration(warehouse, key) == calibration != old_calibration
    new_state = published_state(warehouse, key)
    assert new_state.computed_at > old_state.computed_at and new_state.fitted_at > old_state.fitted_at
    assert held_out(warehouse, key)[0].tolist() == held_out(warehouse, key, published=False)[0].tolist()


def test_a_model_change_shows_only_once_every_key_of_the_model_is_rerun(warehouse):
    evaluated(warehouse)
    changed = catalogue(spec(ENC, length=512), spec(OTHER))  # ENC's settings changed: both its keys rerun
    old, new = settings_fingerprint(CATALOGUE, ENC), settings_fingerprint(changed, ENC)
    assert old != new
    # the full-path key reruns with the new settings; the leaf key still has the old ones: not whole
    assert not run(warehouse, ENC_PATH, 12, models=changed)
    assert board(warehouse) == FIRST and best(warehouse, changed) == (ENC_PATH.on("d1"), 0.75)
    assert published_state(warehouse, ENC_PATH.on("d1")).model_fingerprint == old
    # another model's partition completing does not publish it either
    assert not run(warehouse, OTHER_PATH, 4, models=changed)
    assert board(warehouse) == FIRST
    # the leaf key too: the change is whole, every new figure at once
    assert run(warehouse, ENC_LEAF, 10, models=changed)
    assert board(warehouse) == [(ENC, "full-path", 1.0, "d1"), (ENC, "leaf", 0.833333, "d1"), (OTHER, "full-path", 0.333333, "d1")]
    assert best(warehouse, changed) == (ENC_PATH.on("d1"), 1.0)
    assert [published_state(warehouse, k.on("d1")).model_fingerprint for k in (ENC_PATH, ENC_LEAF)] == [new, new]


def test_new_products_show_once_every_published_result_is_back_on_them(warehouse):
    evaluated(warehouse)
    assert not run(warehouse, ENC_PATH, 12, dataset="d2")  # the first partition on the new products
    assert not run(warehouse, ENC_LEAF, 12, dataset="d2")
    assert board(warehouse) == FIRST and best(warehouse) == (ENC_PATH.on("d1"), 0.75)
    assert run(warehouse, OTHER_PATH, 12, dataset="d2")
    assert board(warehouse) == [(ENC, "full-path", 1.0, "d2"), (ENC, "leaf", 1.0, "d2"), (OTHER, "full-path", 1.0, "d2")]


def test_cleared_results_leave_the_published_tables_and_hold_nothing_back(warehouse):
    evaluated(warehouse)
    clear_results(warehouse, OTHER_PATH)  # e.g. the approach no longer applies to the model
    assert board(warehouse) == FIRST[:2]
    with warehouse.connect(read_only=True) as con:
        for table in ("published_metrics", "published_calibrations", "published_heldout_confidences",
                      "published_result_settings", "metrics", "calibrations", "result_settings"):  # fmt: skip
            assert con.execute(f"SELECT count(*) FROM {table} WHERE model = ?", [OTHER]).fetchone() == (0,), table
    # new products: the two ENC keys are all the published set asks for
    assert not run(warehouse, ENC_PATH, 12, dataset="d2")
    assert run(warehouse, ENC_LEAF, 12, dataset="d2")
    assert board(warehouse) == [(ENC, "full-path", 1.0, "d2"), (ENC, "leaf", 1.0, "d2")]


def test_a_disabled_or_unregistered_result_half_way_holds_nothing_back_and_keeps_its_published_rows(warehouse):
    evaluated(warehouse)
    predict(warehouse, OTHER_PATH, 12)  # OTHER's rerun stops half-way, then OTHER is disabled
    disabled = catalogue(spec(ENC), spec(OTHER, enabled=False))
    assert run(warehouse, ENC_PATH, 8, models=disabled)
    assert board(warehouse) == [(ENC, "full-path", 0.666667, "d1"), (ENC, "leaf", 0.5, "d1"), (OTHER, "full-path", 0.25, "d1")]
    assert load_calibration(warehouse, OTHER_PATH.on("d1")).accuracy == 0.25  # its last whole result
    # an approach no longer registered, half-way: likewise
    gone = ResultKey("gone-approach", ENC, "full-path")
    save_results(warehouse, gone.on("d1"), IDS, ranked(1), {}, products=len(IDS), scope="full",
                 model_fingerprint=settings_fingerprint(CATALOGUE, ENC))  # fmt: skip
    assert run(warehouse, ENC_LEAF, 7, models=disabled)
    assert (ENC, "leaf", 0.583333, "d1") in board(warehouse)


def test_an_older_warehouse_publishes_what_is_whole_on_its_first_refresh(warehouse):
    evaluated(warehouse)
    with warehouse.transaction() as con:  # as written before publication: working tables only
        for table in ("publication", "published_metrics", "published_calibrations", "published_heldout_confidences",
                      "published_result_settings", "result_settings"):  # fmt: skip
            con.execute(f"DROP TABLE {table}")
        con.execute("CREATE OR REPLACE VIEW leaderboard AS SELECT model, variant, f1 AS strict, dataset FROM metrics "
                    "WHERE headline AND mode = 'strict'")  # fmt: skip
    assert best(warehouse) == (ENC_PATH.on("d1"), 0.75)  # read from the working tables meanwhile
    assert load_calibration(warehouse, OTHER_PATH.on("d1")).accuracy == 0.25
    assert published_state(warehouse, OTHER_PATH.on("d1")).model_fingerprint is None
    assert publish_if_whole(warehouse, CATALOGUE)
    assert refresh_views(warehouse, CATALOGUE)  # the views now read the published copies
    assert board(warehouse) == FIRST
    # the stored results are recorded as computed with the settings of now, so the next change is caught
    assert published_state(warehouse, OTHER_PATH.on("d1")).model_fingerprint == settings_fingerprint(CATALOGUE, OTHER)
    changed = catalogue(spec(ENC, length=512), spec(OTHER))
    assert not run(warehouse, ENC_PATH, 12, models=changed)
    assert board(warehouse) == FIRST


def test_a_model_outside_the_catalogue_records_the_empty_fingerprint_and_a_reranker_its_own():
    assert settings_fingerprint(CATALOGUE, "org/remote-only") == ""
    enc, other = settings_fingerprint(CATALOGUE, ENC), settings_fingerprint(CATALOGUE, OTHER)
    assert settings_fingerprint(CATALOGUE, ENC, OTHER) == f"{enc}+{other}"
    assert settings_fingerprint(CATALOGUE, ENC, "org/remote-only") == f"{enc}+"


def test_settings_are_written_with_the_predictions(warehouse):
    predict(warehouse, ENC_PATH, 9)
    with warehouse.connect(read_only=True) as con:
        rows = con.execute("SELECT approach, model, reranker, variant, dataset, model_fingerprint FROM result_settings").fetchall()
    assert rows == [("text-retrieval", ENC, None, "full-path", "d1", settings_fingerprint(CATALOGUE, ENC))]
    # a rerun replaces the key's row
    predict(warehouse, ENC_PATH, 9, models=catalogue(spec(ENC, length=1), spec(OTHER)))
    with warehouse.connect(read_only=True) as con:
        (count,) = con.execute("SELECT count(*) FROM result_settings").fetchone()
    assert count == 1


def test_nothing_scored_publishes_nothing(warehouse):
    predict(warehouse, ENC_PATH, 9)
    assert not publish_if_whole(warehouse, CATALOGUE)
    assert not warehouse.table_exists("publication")
