"""A writer SIGKILLed in the middle of an atomic write (issue 12): the target keeps its old content, and
the temp file it left is removed by the next write to that target once it is stale."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxo_pipeline.files import STALE_TEMP_S, write_parquet_atomic

# Writes half a file into its temp file, says so, and waits to be killed.
WRITER = """
import sys, time
from pathlib import Path
from taxo_pipeline.files import write_atomic

def write(tmp):
    tmp.write_bytes(b"PAR1 half a parquet file")
    print(tmp.name, flush=True)
    time.sleep(600)

write_atomic(Path(sys.argv[1]), write)
"""


def _kill_writer_mid_write(target: Path) -> Path:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        temp = target.with_name(writer.stdout.readline().strip())
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    return temp


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_next_write_removes_the_temp_file_of_a_killed_writer(tmp_path):
    target = tmp_path / "table.parquet"
    write_parquet_atomic(pa.table({"value": [1, 2]}), target)
    temp = _kill_writer_mid_write(target)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, temp.name])
    assert temp.name.startswith(".table.parquet.") and temp.name.endswith(".part")
    assert pq.read_table(target)["value"].to_pylist() == [1, 2]  # the old file, whole

    _age(temp, STALE_TEMP_S + 1)
    write_parquet_atomic(pa.table({"value": [3]}), target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert pq.read_table(target)["value"].to_pylist() == [3]


def test_temp_files_that_may_still_be_written_are_kept(tmp_path):
    target = tmp_path / "table.parquet"
    recent_dead = _kill_writer_mid_write(target)  # too recent: its writer may be on another host
    live = tmp_path / f".table.parquet.{os.getpid()}.{'0' * 16}.part"  # an old one of a live writer
    live.write_bytes(b"x")
    _age(live, STALE_TEMP_S + 1)
    other = tmp_path / ".table.parquet.someone-elses.part"  # not our naming pattern
    other.write_bytes(b"x")
    _age(other, STALE_TEMP_S + 1)

    write_parquet_atomic(pa.table({"value": [4]}), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, recent_dead.name, live.name, other.name]
    )
    assert pq.read_table(target)["value"].to_pylist() == [4]
