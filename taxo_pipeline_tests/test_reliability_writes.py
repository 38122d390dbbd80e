"""Atomic writes under concurrency (issue 12): several processes writing one file never fail, and a
reader never sees a half-written file."""

import json
import multiprocessing
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxo_pipeline.evaluation.reports import write_report
from taxo_pipeline.files import write_parquet_atomic

ROWS, WRITERS, ROUNDS = 20_000, 3, 40


def _write_rounds(kind: str, target: str, writer: int) -> None:
    for round_ in range(ROUNDS):
        value = writer * 1000 + round_
        if kind == "parquet":
            write_parquet_atomic(pa.table({"value": [value] * ROWS}), Path(target))
        else:
            write_report({"value": value, "rows": [value] * ROWS}, Path(target))


def _read_whole(kind: str, target: Path) -> list[int]:
    """The file's values; raises on a truncated or half-written file."""
    if kind == "parquet":
        return pq.read_table(target)["value"].to_pylist()
    return json.loads(target.read_text())["rows"]


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_concurrent_atomic_writers_never_fail_and_readers_see_whole_files(tmp_path, kind):
    target = tmp_path / f"table.{kind}"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_rounds, args=(kind, str(target), w)) for w in range(WRITERS)]
    for writer in writers:
        writer.start()
    reads, bad = 0, []
    while any(w.is_alive() for w in writers) or reads == 0:
        if not target.exists():
            continue
        values = _read_whole(kind, target)
        reads += 1
        if len(values) != ROWS or len(set(values)) != 1:
            bad.append((len(values), sorted(set(values))[:3]))
    for writer in writers:
        writer.join()
    assert [w.exitcode for w in writers] == [0] * WRITERS
    assert bad == []
    assert reads > 0
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left behind


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet_atomic(pa.table({"value": [1, 2]}), target)
    with pytest.raises(AttributeError):  # pyarrow fails part-way: it has created the temp file by then
        write_parquet_atomic("not a table", target)
    assert pq.read_table(target)["value"].to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_atomic_write_gives_the_file_ordinary_permissions(tmp_path):
    # Temp files from mkstemp are 0600; the renamed result must be readable as before (umask applies).
    previous = os.umask(0o022)
    try:
        write_parquet_atomic(pa.table({"value": [1]}), tmp_path / "t.parquet")
        write_report({"a": 1}, tmp_path / "r.json")
    finally:
        os.umask(previous)
    assert oct((tmp_path / "t.parquet").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == oct(0o644)
