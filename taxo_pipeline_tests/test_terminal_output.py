"""What a person reads at the terminal: the leaderboard in 120 columns, progress lines, the log file."""

import logging

import dagster as dg
import polars as pl
import pytest

from taxo_pipeline.cli import common
from taxo_pipeline.defs.runner.runs import run_name
from taxo_pipeline.evaluation.leaderboard import leaderboard_text


def _board() -> pl.DataFrame:
    return pl.DataFrame({
        "task": ["L3 classification (hF1)", "L3 classification (hF1)", "L1 classification (L1 F1)"],
        "approach": ["label-transfer", "text-retrieval", "nli"],
        "model": ["sentence-transformers/all-MiniLM-L6-v2", "org/" + "m" * 60, "tiny/nli"],
        "variant": ["full-depth", "full-path", None],
        "strict": [0.526315789, 0.34117647058823, 0.1],
        "lenient": [0.5263, 0.341, 0.1],
        "products": [260, 260, 5],
        "latency_per_product_ms": [12.345678, 7.0, None],
        "evaluation": ["5-fold cv", "zero-shot", "zero-shot"],
    })  # fmt: skip


def test_the_leaderboard_fits_120_columns_with_three_decimals():
    text = leaderboard_text(_board())
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120
    assert lines[0] == "L3 classification (hF1)"
    assert lines[1].split() == [
        "approach", "model", "variant", "strict", "lenient", "products", "ms/prod", "evaluation",
    ]  # fmt: skip
    assert lines[2].split() == [
        "label-transfer", "sentence-transformers/all-MiniLM-L6-v2", "full-depth", "0.526", "0.526", "260", "12.3",
        "5-fold", "cv",
    ]  # fmt: skip
    assert lines[3].split()[1] == "org/" + "m" * 33 + "…"  # a long model id is cut, not the row widened
    assert lines[3].split()[3:5] == ["0.341", "0.341"]
    assert lines[5] == "L1 classification (L1 F1)"
    assert lines[7].split() == ["nli", "tiny/nli", "-", "0.100", "0.100", "5", "-", "zero-shot"]
    assert leaderboard_text(pl.DataFrame()) == "no results yet"


def test_progress_goes_to_the_terminal_and_everything_to_the_log_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAXO_DATA_DIR", str(tmp_path))
    common.configure_logging(verbose=False)
    try:
        logging.getLogger("taxo_pipeline").info("run 1: taxonomy_trimmed")
        logging.getLogger("taxo_pipeline.sie").debug("a debug line")
        logging.getLogger("dagster.automation_condition_tester").info("evaluation result: 3 requested")
        logging.getLogger("dagster").warning("a warning")
        logging.getLogger(common.RUN_EVENTS_LOGGER).debug("STEP_START")
        assert common.dagster_console_level() == "CRITICAL"
    finally:
        for handler in [h for h in logging.getLogger().handlers if getattr(h, "taxo_pipeline", False)]:
            logging.getLogger().removeHandler(handler)
            handler.close()
    terminal = [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert terminal == ["run 1: taxonomy_trimmed", "a warning"]
    logged = (tmp_path / "logs" / "taxo-pipeline.log").read_text()
    for line in ("a debug line", "evaluation result: 3 requested", "a warning", "STEP_START"):
        assert line in logged


def test_command_runs_are_named_by_what_they_materialize():
    keys = [dg.AssetKey("text_retrieval_predictions"), dg.AssetKey("category_embeddings")]
    assert run_name(keys) == "cli__category_embeddings__text_retrieval_predictions"
    assert run_name([*keys, dg.AssetKey("a"), dg.AssetKey("b")]) == "cli__a__b__and_2_more"


def test_a_bad_model_id_says_what_an_id_looks_like(capsys):
    from taxo_pipeline.cli.main import main

    with pytest.raises(SystemExit):
        main(["encode", "--model", "all-MiniLM-L6-v2", "a hat"])
    assert capsys.readouterr().err.strip().endswith(
        "argument --model: invalid model id 'all-MiniLM-L6-v2': expected 'org/name' made of letters, digits, '.', '_' "
        "and '-' (each part starting with a letter or digit) (e.g. sentence-transformers/all-MiniLM-L6-v2)"
    )


def test_every_missing_source_is_named_at_once(tmp_path, monkeypatch, capsys):
    from taxo_pipeline.cli.main import main

    for name, value in {"TAXO_DATA_DIR": "data", "TAXO_WAREHOUSE": "w.duckdb", "DAGSTER_HOME": "home",
                        "TAXO_PRODUCTS": "missing/products.jsonl", "TAXO_TAXONOMY": "missing/categories.txt"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(tmp_path / value))
    assert main(["materialize"]) == 1
    err = capsys.readouterr().err
    assert f"products file {tmp_path / 'missing/products.jsonl'} does not exist (set TAXO_PRODUCTS" in err
    assert f"taxonomy file {tmp_path / 'missing/categories.txt'} does not exist (set TAXO_TAXONOMY" in err
    assert not (tmp_path / "w.duckdb").exists()  # nothing started, nothing written
