"""A catalogue's results are never lost, mixed or half-written (issue 22), through `classify-products` and
the session SIE server on a small evaluated workspace: two files with one stem keep their own results, a bad
row far into a file fails before anything is written, a killed rerun leaves the `classifications` view as it
was, an --output that cannot be written is refused before any work, choices that cannot classify a catalogue
name the real cause, and the local SIE server starts only when a validated catalogue has a shard to classify.
The row-level checks of each format are in test_reliability_inputs.py."""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from taxo_pipeline.classification.shards import catalogue_name
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline_tests.classify_testkit import catalogue, evaluated_workspace, run_dir
from taxo_pipeline_tests.sie.sie_testkit import MINILM


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue-reliability")
    return root, evaluated_workspace(root, sie_server, test_catalogue)


@pytest.fixture
def env(evaluated, monkeypatch):
    root, environment = evaluated
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return root, environment


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(dict(zip(("product_id", "product_title", "product_description"), r))) + "\n"
                            for r in rows))  # fmt: skip
    return path


def _view(environment, path=None):
    """The view's rows (of one catalogue, or all), every column that a rerun would change."""
    where, params = ("WHERE catalogue = ?", [catalogue_name(path)]) if path else ("", [])
    with duckdb.connect(environment["TAXO_WAREHOUSE"], read_only=True) as con:
        return con.execute(f"SELECT catalogue, product_id, category, confidence, catalogue_fingerprint, classified_at "
                           f"FROM classifications {where} ORDER BY ALL", params).fetchall()  # fmt: skip


def _server_logs(root):
    return sorted((root / "data" / "logs").glob("sie-server-*.log"))


def test_two_catalogues_with_one_stem_keep_their_own_results(env, tmp_path, capsys):
    _, environment = env
    (tmp_path / "other").mkdir()
    good = _jsonl(tmp_path / "good.jsonl", [(f"g{i}", f"Dog collar {i}", "Nylon collar") for i in range(4)])
    other = catalogue(tmp_path / "other" / "good.csv", 2)
    spaced, underscored = catalogue(tmp_path / "a b.csv", 3), catalogue(tmp_path / "a_b.csv", 1)
    for path in (good, other, spaced, underscored):
        assert classify_products(["--products", str(path)]) == 0
    ids = {path.name: [r[1] for r in _view(environment, path)] for path in (good, other, spaced, underscored)}
    assert ids == {"good.jsonl": ["g0", "g1", "g2", "g3"], "good.csv": ["p0000", "p0001"],
                   "a b.csv": ["p0000", "p0001", "p0002"], "a_b.csv": ["p0000"]}  # fmt: skip
    # the same file again: its shard is kept, nothing else is touched
    capsys.readouterr()
    assert classify_products(["--products", str(good)]) == 0
    assert "4 products in 1 shards; this run classified 0 products in shards none, kept shards [0]" in capsys.readouterr().out
    assert len(_view(environment, other)) == 2


def test_a_bad_row_far_into_a_catalogue_fails_before_anything_is_written(env, tmp_path, capsys):
    root, environment = env
    path = _jsonl(tmp_path / "deep.jsonl", [(f"p{i:04d}", f"Cat toy {i}", "A feather wand") for i in range(3)])
    assert classify_products(["--products", str(path), "--shard-size", "500"]) == 0
    before, files = _view(environment), sorted((root / "data" / run_dir(path)).rglob("*"))
    stamps = [(f, f.stat().st_mtime_ns) for f in files]
    # 4,200 products in 9 shards of 500: line 4,151 repeats the id of line 10, far past the first read batch
    rows = [(f"p{i:04d}", f"Dog bed {i}", "Washable cover") for i in range(4200)]
    rows[4150] = ("p0009", "Dog bowl", "Steel")
    _jsonl(path, rows)
    capsys.readouterr()
    assert classify_products(["--products", str(path), "--shard-size", "500"]) == 1
    assert _view(environment) == before
    assert [(f, f.stat().st_mtime_ns) for f in sorted((root / "data" / run_dir(path)).rglob("*"))] == stamps
    assert capsys.readouterr().err.strip().endswith(
        f"products file {path}, line 4151 repeats product_id 'p0009' (first at line 10); ids must be unique: "
        "give each product its own id"
    )


def test_a_killed_rerun_leaves_the_view_as_it_was(env, tmp_path):
    root, environment = env
    path = catalogue(tmp_path / "rerun.csv", 60)
    assert classify_products(["--products", str(path), "--shard-size", "20"]) == 0
    before = _view(environment, path)
    assert len(before) == 60
    # every row changes; the rerun is killed once it has replaced its first shard file
    path.write_text(path.read_text().replace(" v", " w"))
    shard = root / "data" / run_dir(path) / "shard-00000.parquet"
    inode = shard.stat().st_ino
    command = [sys.executable, "-m", "taxo_pipeline.cli.classify", "--products", str(path), "--shard-size", "20"]
    rerun = subprocess.Popen(command, env={**os.environ, **environment}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while shard.stat().st_ino == inode and rerun.poll() is None:
        time.sleep(0.02)
    rerun.send_signal(signal.SIGKILL)
    assert rerun.wait() == -signal.SIGKILL, "the rerun ended before it could be killed mid-way"
    assert _view(environment, path) == before  # not a mix of the two versions
    assert classify_products(["--products", str(path), "--shard-size", "20"]) == 0
    after = _view(environment, path)
    assert len(after) == 60 and len({r[4] for r in after}) == 1 and after[0][4] != before[0][4]


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(env, tmp_path, capsys, where):
    root, _ = env
    path = catalogue(tmp_path / "out.csv", 3)
    (tmp_path / "results").mkdir()
    (tmp_path / "notes.txt").write_text("a file")
    results, under = tmp_path / "results", tmp_path / "notes.txt" / "out.csv"
    output, problem = {
        "directory": (results, f"{results} is a directory: name a file in it, e.g. {results / 'classified.parquet'}"),
        "under a file": (under, f"{under}: {tmp_path / 'notes.txt'} is a file, not a directory: choose a path in a directory"),
    }[where]  # fmt: skip
    assert classify_products(["--products", str(path), "--output", str(output)]) == 1
    assert capsys.readouterr().err.strip() == f"classify-products: error: --output {problem}"
    assert not (root / "data" / run_dir(path)).exists()


@pytest.mark.parametrize(
    ("choice", "cause"),
    [
        (["--approach", "nearest-neighbour"], "unknown approach 'nearest-neighbour': expected one of text-retrieval, "),
        (["--approach", "nli"], "approach nli predicts only the top-level (L1) category and cannot classify a catalogue "
                                "to a category path: choose one of text-retrieval, "),
        (["--model", "org/never-evaluated"], "approach title-description (the leaderboard's best) was never evaluated "
                                             f"with --model org/never-evaluated on the current dataset (enabled models only); it was with: {MINILM}"),
        (["--variant", "both"], "approach title-description (the leaderboard's best) was never evaluated with --variant both"
                                " on the current dataset (enabled models only); it was with: full-depth"),
        (["--approach", "score-fusion"], "approach score-fusion has no evaluation with an enabled model on the current "
                                         "dataset in"),
    ],
)  # fmt: skip
def test_a_choice_that_cannot_classify_a_catalogue_names_the_real_cause(env, tmp_path, capsys, choice, cause):
    root, _ = env
    path = catalogue(tmp_path / "choice.csv", 3)
    assert classify_products(["--products", str(path), *choice]) == 1
    error = capsys.readouterr().err
    assert cause in error and "Traceback" not in error
    assert not (root / "data" / "classifications" / catalogue_name(path)).exists()


def test_the_local_server_starts_only_for_a_valid_catalogue_with_a_shard_to_classify(env, tmp_path, monkeypatch, capsys):
    root, _ = env
    path = catalogue(tmp_path / "served.csv", 5)
    assert classify_products(["--products", str(path)]) == 0  # through the session server
    monkeypatch.delenv("SIE_BASE_URL")  # from here, a server would be started locally
    logs = _server_logs(root)
    capsys.readouterr()
    assert classify_products(["--products", str(path)]) == 0
    assert _server_logs(root) == logs  # no local SIE server was started
    assert "classified 0 products in shards none, kept shards [0]" in capsys.readouterr().out
    bad = path.with_name("bad.csv")
    bad.write_text(path.read_text() + "p0000,Dog bowl,Steel\n")
    assert classify_products(["--products", str(bad)]) == 1
    assert _server_logs(root) == logs
    assert "bad.csv, row 6 repeats product_id 'p0000' (first at row 1)" in capsys.readouterr().err
