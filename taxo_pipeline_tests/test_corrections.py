"""Reviewers' corrections (TAXO_CORRECTIONS): bad rows refused by their line in every format and at the
sensor (nothing reruns), and a corrections file reaching label transfer's labelled pool, through the real
MiniLM on the session's SIE server, on the small taxonomy (two branches of the real one) and the sample's products of those branches.
That a changed file reruns only label transfer is in test_automation.py."""

from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl
import pytest
from dagster._core.definitions.observe import observe  # not exported at the top level in 1.13

from taxo_pipeline.approaches import label_transfer
from taxo_pipeline.approaches.evidence import Evidence
from taxo_pipeline.approaches.spec import ClassifyRequest
from taxo_pipeline.classification.calibration import Calibration
from taxo_pipeline.classification.reviewer_labels import reviewed_categories, reviews
from taxo_pipeline.classification.run import CatalogueRun
from taxo_pipeline.dataset.corrections import NONE, corrections_fingerprint, read_corrections
from taxo_pipeline.dataset.tables import load_corrections
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories, trim_path
from taxo_pipeline.defs.feedback.corrections import build_corrections_sensor, corrections_file, corrections_observations
from taxo_pipeline.defs.models.sensors import DATA_VERSION_TAG, recorded_version
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.retrieval.exact_search import normalise
from taxo_pipeline.retrieval.neighbour_votes import neighbour_votes, transfer_labels
from taxo_pipeline.settings import DEFAULT_MAX_TEXT_CHARS, TAXONOMY_FULL_DEPTH_FILE
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.classify_testkit import BRANCHES, small_taxonomy
from taxo_pipeline_tests.factories import SAMPLE_PRODUCTS
from taxo_pipeline_tests.sie.sie_testkit import MINILM

CATEGORIES = {"Luggage & Bags", "Luggage & Bags > Suitcases", "Luggage & Bags > Garment Bags > Travel Garment Bags"}
HEADER = "product_id,category,product_title,product_description\n"


def _csv(tmp_path, body: str):
    path = tmp_path / "corrections.csv"
    path.write_text(HEADER + body)
    return path


def test_good_rows_are_read_trimmed_to_the_depth_and_a_repeated_identical_row_is_one_correction(tmp_path):
    path = _csv(tmp_path, "a,Luggage & Bags > Suitcases,Carry-on,\n7,Luggage & Bags > Garment Bags > Travel Garment Bags,,"
                          "Folds a suit\na,Luggage & Bags > Suitcases,Carry-on,\n")  # fmt: skip
    frame = read_corrections(path, CATEGORIES, depth=2)
    assert frame.rows() == [("a", "Carry-on", "", "Luggage & Bags > Suitcases"),
                            ("7", "", "Folds a suit", "Luggage & Bags > Garment Bags")]  # fmt: skip


def test_every_bad_csv_row_is_refused_by_its_row(tmp_path):
    path = _csv(tmp_path, "a,Luggage & Bags > Suitcases,Carry-on,\n"  # row 1: fine
                          ",Luggage & Bags,Bag,\n"  # row 2: no id
                          "b,Luggage & Bags > Hats,Hat,\n"  # row 3: not a category
                          "a,Luggage & Bags,Carry-on,\n"  # row 4: a again, another label
                          "c,,Bag,\n"  # row 5: no category
                          "d,Luggage & Bags,,\n")  # row 6: no text  # fmt: skip
    with pytest.raises(InputError) as error:
        read_corrections(path, CATEGORIES, depth=3)
    message = str(error.value)
    assert message.startswith(f"corrections file {path}: 5 bad row(s): ")
    for expected in ("row 2: empty product_id",
                     "row 3: unknown category 'Luggage & Bags > Hats' for product_id 'b'",
                     "row 4: product_id 'a' is labelled 'Luggage & Bags' here but 'Luggage & Bags > Suitcases' on row 1",
                     "row 5: empty category for product_id 'c'",
                     "row 6: product_title and product_description are both empty for product_id 'd'"):  # fmt: skip
        assert expected in message
    assert "; row 1:" not in message and ": row 1:" not in message  # the good row is not named


def test_a_missing_column_is_refused_for_the_file_in_csv_and_parquet_and_by_line_in_json_lines(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("product_id,category,product_title\na,Luggage & Bags,Bag\n")
    with pytest.raises(InputError, match=rf"corrections file {csv} lacks column\(s\) product_description \(it has: "):
        read_corrections(csv, CATEGORIES, depth=3)
    parquet = tmp_path / "c.parquet"
    pl.DataFrame({"product_id": ["a"], "product_title": ["Bag"], "product_description": [""]}).write_parquet(parquet)
    with pytest.raises(InputError, match=rf"corrections file {parquet} lacks column\(s\) category"):
        read_corrections(parquet, CATEGORIES, depth=3)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"product_id": "a", "category": "Luggage & Bags", "product_title": "Bag", "product_description": ""}\n'
                     '\n{"product_id": 1.5, "category": "Luggage & Bags", "product_title": "Bag", "product_description": ""}\n'
                     '{"product_id": "b", "product_title": "Bag", "product_description": ""}\n')  # fmt: skip
    with pytest.raises(InputError) as error:
        read_corrections(jsonl, CATEGORIES, depth=3)
    assert str(error.value) == (f"corrections file {jsonl}: 2 bad row(s): line 3: product_id is 1.5: write it as a string; "
                                "line 4: lacks category (every row needs product_id, category, product_title, "
                                "product_description; a title or a description may be empty)")  # fmt: skip
    jsonl.write_text(jsonl.read_text() + "not json\n")  # a line that cannot be read at all stops the reading there
    with pytest.raises(InputError, match=rf"^corrections file {jsonl}, line 5: not valid JSON"):
        read_corrections(jsonl, CATEGORIES, depth=3)


def test_new_corrections_reclassify_a_catalogue_and_none_keeps_its_shards(tmp_path):
    path = _csv(tmp_path, "a,Luggage & Bags,Bag,\n")
    run = CatalogueRun(tmp_path / "c.csv", "c", "f", ResultKey("label-transfer", "m", "full-depth"),
                       Calibration("platt", {}, 1, 1.0), tmp_path)  # fmt: skip
    assert replace(run, corrections=NONE).fingerprint == run.fingerprint  # unset: the fingerprint of before
    corrected = replace(run, corrections=corrections_fingerprint(path))
    assert corrected.fingerprint != run.fingerprint
    path.write_text(path.read_text() + "b,Luggage & Bags,Case,\n")
    assert replace(run, corrections=corrections_fingerprint(path)).fingerprint != corrected.fingerprint
    with pytest.raises(InputError, match=f"corrections file {tmp_path / 'gone.csv'} does not exist"):
        corrections_fingerprint(tmp_path / "gone.csv")


def test_the_sensor_refuses_a_bad_file_by_its_rows_and_keeps_the_last_good_version(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    pl.DataFrame({"path": sorted(CATEGORIES)}).write_parquet(tmp_path / "data" / TAXONOMY_FULL_DEPTH_FILE)
    monkeypatch.setenv("TAXO_DATA_DIR", str(tmp_path / "data"))
    path = _csv(tmp_path, "a,Luggage & Bags,Bag,\n")
    monkeypatch.setenv("TAXO_CORRECTIONS", str(path))
    workspace = Workspace.from_env()
    corrections_sensor = build_corrections_sensor(workspace)
    with dg.DagsterInstance.ephemeral() as instance:
        good = corrections_sensor(dg.build_sensor_context(instance=instance))
        (observation,) = good.asset_events
        instance.report_runless_asset_event(observation)  # as the daemon records it
        assert observation.tags[DATA_VERSION_TAG] == corrections_fingerprint(path)
        path.write_text(HEADER + "a,Luggage & Bags,Bag,\nb,Luggage & Bags > Hats,Hat,\n")
        bad = corrections_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(bad, dg.SkipReason)
        assert bad.skip_message == (f"corrections file {path}: 1 bad row(s): row 2: unknown category "
                                    "'Luggage & Bags > Hats' for product_id 'b': not a path of the taxonomy")  # fmt: skip
        with pytest.raises(InputError, match="row 2: unknown category"):  # what `materialize` stops on
            corrections_observations(instance, workspace)
        observed = observe([corrections_file], instance=instance, resources={"storage": WorkspaceResource()},
                           raise_on_error=False)  # "Observe sources"  # fmt: skip
        assert not observed.success and "row 2: unknown category" in str(observed.get_step_failure_events()[0])
        assert recorded_version(instance, corrections_file.key) == observation.tags[DATA_VERSION_TAG]


def test_a_review_matches_its_id_and_its_text_whitespace_aside(tmp_path):
    path = _csv(tmp_path, "a,Luggage & Bags > Suitcases,Carry-on  case,Four wheels\nb,Luggage & Bags,Bag,\n")
    reviewed = reviews(read_corrections(path, CATEGORIES, depth=3))
    catalogue = pl.DataFrame({
        "product_id": ["a", "a", "a", "b", "c"],
        "product_title": [" Carry-on case ", "Carry-on case Four wheels", "Carry-on case", "Bag", "Bag"],
        "product_description": ["Four\nwheels", None, "Three wheels", None, None],
    })  # fmt: skip
    # the same text spaced otherwise; the text moved into the title; other text; a null description; another id
    assert reviewed_categories(catalogue, reviewed) == ["Luggage & Bags > Suitcases", None, None, "Luggage & Bags", None]
    assert reviewed_categories(catalogue, reviews(None)) == [None] * 5


def test_unscored_rows_vote_under_the_fold_rule_but_never_choose_the_vote_weight():
    rng = np.random.default_rng(0)
    vectors, labels = normalise(rng.normal(size=(12, 8))), rng.integers(0, 3, 12)
    scores, folds, paths = rng.normal(size=(12, 3)), np.arange(12) % 5, ["A", "B", "C"]
    scored = np.arange(12) < 10  # rows 10 and 11 are corrections
    first = transfer_labels(scores, vectors, labels, folds, paths, scored=scored)
    changed = scores.copy()
    changed[10:] = 100.0  # the corrections' own scores are never read
    second = transfer_labels(changed, vectors, labels, folds, paths, scored=scored)
    assert first.weights == second.weights
    np.testing.assert_allclose(first.scores[:10], second.scores[:10])
    voters = first.neighbours[:10]
    assert (voters >= 10).any()  # they vote for scored products ...
    for row in range(10):  # ... never for one of their own fold
        assert all(folds[v] != folds[row] for v in voters[row] if v >= 0)


@pytest.fixture(scope="module")
def small(tmp_path_factory, sie_server):
    """The small taxonomy, the sample's labelled products of its branches and a request for label transfer."""
    root = tmp_path_factory.mktemp("corrections")
    categories = parse_categories(small_taxonomy(root / "categories.txt"))
    (root / "data").mkdir()
    pl.DataFrame({"path": sorted(categories)}).write_parquet(root / "data" / TAXONOMY_FULL_DEPTH_FILE)
    taxonomy = TrimmedTaxonomy.from_categories(categories)
    sample = pl.read_ndjson(SAMPLE_PRODUCTS).filter(pl.col("ground_truth_category").str.contains(f"^({'|'.join(BRANCHES)})"))
    labelled = pl.DataFrame({
        "product_id": [f"{s}-{i}" for s, i in sample.select("split", "row_index").iter_rows()],
        "product_title": sample["product_title"], "product_description": sample["product_description"],
        "ground_truth_category": [trim_path(c) for c in sample["ground_truth_category"]],
    })  # fmt: skip
    with InferenceClient(sie_server, SIESettings()) as client:
        evidence = Evidence(client, root / "chroma", taxonomy, sorted(categories), max_chars=DEFAULT_MAX_TEXT_CHARS)
        request = ClassifyRequest(pl.DataFrame(), taxonomy, evidence, MINILM, "full-depth", "text",
                                  top_k=len(taxonomy.paths), labelled=labelled)  # fmt: skip
        yield root, request


QUERY = ("Hard-shell carry-on suitcase", "Spinner wheels, a telescopic handle and a TSA lock; fits airline cabins.")
CORRECTED = "Luggage & Bags > Garment Bags"  # no labelled product has it


def _scores(request: ClassifyRequest) -> dict[str, float]:
    products = pl.DataFrame({"product_id": ["q"], "product_title": [QUERY[0]], "product_description": [QUERY[1]]})
    return dict(label_transfer.classify(replace(request, products=products)).ranked[0])


def test_a_corrections_file_joins_the_pool_and_its_label_is_the_nearest_vote(small, monkeypatch):
    root, request = small
    path = root / "corrections.csv"
    path.write_text(HEADER + f'c-1,{CORRECTED},"{QUERY[0]}","{QUERY[1]}"\n')
    workspace = Workspace.from_env({"TAXO_CORRECTIONS": str(path), "TAXO_DATA_DIR": str(root / "data")})
    corrected = replace(request, corrections=load_corrections(workspace))
    assert corrected.corrections.rows() == [("c-1", *QUERY, CORRECTED)]
    column = request.taxonomy.paths.index(CORRECTED)
    query = label_transfer.query_vectors(corrected, pl.DataFrame({"product_title": [QUERY[0]], "product_description": [QUERY[1]]}))
    votes = {}
    for name, req in (("without", request), ("with", corrected)):
        vectors, labels, _, weights = label_transfer.labelled_pool(req, req.labelled)
        votes[name] = neighbour_votes(query @ vectors.T, labels, len(req.taxonomy.paths)).votes[0, column]
        assert len(labels) == req.labelled.height + (name == "with")
    # the correction has the query's own text (cosine 1): by hand, its softmax weight over the 10 nearest at
    # T = 0.05 is 1 / (1 + sum of exp((s_i - 1) / 0.05)) over the 9 others, all far below 1
    assert votes["without"] == 0.0 and votes["with"] > 0.9
    # a catalogue product's score moves by the vote weight times that vote (cross-validation on these 21
    # labelled products chooses 0, votes off: then the correction changes the vote and nothing else)
    weight = float(np.median(list(weights.values())))
    before, after = _scores(request), _scores(corrected)
    assert after[CORRECTED] - before[CORRECTED] == pytest.approx(weight * votes["with"], abs=1e-6)


def test_corrections_vote_in_the_evaluation_but_are_never_scored(small, monkeypatch):
    root, request = small
    corrections = pl.DataFrame({"product_id": ["c-1"], "product_title": [QUERY[0]], "product_description": [QUERY[1]],
                                "ground_truth_category": [CORRECTED]})  # fmt: skip
    evaluated = replace(request, products=request.labelled, cross_validate=True, corrections=corrections)
    classified = label_transfer.classify(evaluated)
    assert classified.product_ids == request.labelled["product_id"].to_list()  # the labelled products only
    assert classified.notes["corrections"] == 1 and classified.notes["labelled_products"] == request.labelled.height
    assert classified.notes["vote_weight_per_fold"]["products"].sum() == request.labelled.height
