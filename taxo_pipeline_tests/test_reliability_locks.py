"""File locks (issue 12): no silent non-upgrade, one lock however the path is spelled, and a bounded
wait whose error names the file and its holder."""

import os
import subprocess
import sys
import textwrap

import pytest

from taxo_pipeline.locks import file_lock


def test_nested_exclusive_inside_shared_raises_naming_the_file(tmp_path):
    lock = tmp_path / "store.lock"
    with file_lock(lock, shared=True):
        with pytest.raises(RuntimeError, match=rf"cannot take an exclusive lock on {lock} .* holds it shared"):
            with file_lock(lock):
                pass
        with file_lock(lock, shared=True):  # the shared hold is intact and re-entrant
            pass


def test_nested_same_mode_and_exclusive_then_shared_reenter(tmp_path):
    lock = tmp_path / "store.lock"
    with file_lock(lock):
        with file_lock(lock):
            with file_lock(lock, shared=True):
                pass
        with file_lock(lock, shared=True):
            pass
    with file_lock(lock, shared=True), file_lock(lock, shared=True):
        pass


def _run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TAXO_LOCK_TIMEOUT_S": "20"},
    )


def test_the_same_file_spelled_two_ways_is_one_lock(tmp_path):
    # Before: keys were unresolved paths, so the nested block waited on its own flock forever.
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    completed = _run_python(f"""
        from pathlib import Path
        from taxo_pipeline.locks import file_lock
        root = Path({str(tmp_path)!r})
        with file_lock(root / "real" / "x.lock"):
            with file_lock(root / "real" / "sub" / ".." / "x.lock"):
                with file_lock(root / "link" / "x.lock", shared=True):
                    print("re-entered")
        """)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout == "re-entered\n"


HOLDER = """
import sys, time
from pathlib import Path
from taxo_pipeline.locks import file_lock
with file_lock(Path(sys.argv[1]), shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    time.sleep(60)  # bounded, so a test that failed to time out does not hang forever
"""


@pytest.mark.parametrize(("holder_mode", "wanted_shared"), [("exclusive", True), ("shared", False)])
def test_lock_wait_times_out_naming_the_file_and_the_holder(tmp_path, monkeypatch, holder_mode, wanted_shared):
    lock = tmp_path / "store.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), holder_mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setenv("TAXO_LOCK_TIMEOUT_S", "0.5")
        with pytest.raises(TimeoutError) as caught:
            with file_lock(lock, shared=wanted_shared):
                pass
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert message.startswith(f"waited 0.5 s for the lock {lock} (TAXO_LOCK_TIMEOUT_S); held by pid {holder.pid} (")
    assert f"{sys.executable} -c import sys, time from pathlib import Path" in message  # its command line


def test_invalid_lock_timeout_setting_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXO_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="TAXO_LOCK_TIMEOUT_S='soon': expected a number of seconds greater than 0"):
        with file_lock(tmp_path / "x.lock"):
            pass
