"""A cross-process file lock (flock) for stores that concurrent Dagster step processes share: runs
launched together from the UI, the CLI and tests all queue on the same lock file.

Our own rather than a library: `filelock` has no shared mode, and `fasteners`' reader-writer lock
uses fcntl record locks, which belong to the process (two threads of one process both get the
"exclusive" lock, and closing any descriptor of the file drops it) and it names no holder. flock
locks belong to the open file, so threads queue like processes, and the kernel drops them when a
holder dies.
"""

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taxo_pipeline import settings

log = logging.getLogger(__name__)

TIMEOUT_ENV = "TAXO_LOCK_TIMEOUT_S"
_POLL_S = (0.01, 0.25)  # first and longest pause between tries while waiting

_held = threading.local()  # resolved lock path -> "shared" or "exclusive", for this thread's open blocks


class LockUpgradeError(RuntimeError):
    """An exclusive lock was asked for inside a block that holds the same lock shared."""


class LockTimeoutError(TimeoutError):
    """A lock was not granted within the timeout; the message names the file and its holders."""


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing) for the block: exclusive, or `shared` with other
    shared holders. Waits at most TAXO_LOCK_TIMEOUT_S; the kernel drops it if the process dies.

    Nested blocks of one thread on the same file (however the path is spelled) re-enter, except an
    exclusive request inside a shared hold: upgrading in place could deadlock with another upgrader,
    so it is an error to fix in the caller (take the exclusive lock first)."""
    timeout = settings.current().lock_timeout_s
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    held = _held.__dict__.setdefault("modes", {})
    if key in held:
        if held[key] == "shared" and not shared:
            raise LockUpgradeError(
                f"cannot take an exclusive lock on {key} inside a block that already holds it shared; "
                "take the exclusive lock first"
            )
        yield
        return
    with open(key, "a") as handle:
        _acquire(handle, key, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout)
        held[key] = "shared" if shared else "exclusive"
        try:
            yield
        finally:
            del held[key]
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, key: str, mode: int, timeout: float) -> None:
    # flock itself cannot time out, so poll it without blocking, pausing longer as the wait goes on.
    deadline = time.monotonic() + timeout
    pause = _POLL_S[0]
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"waited {timeout:g} s for the lock {key} ({TIMEOUT_ENV}); {_holders(handle)}. "
                f"If that process is stuck, stop it; to wait longer, raise {TIMEOUT_ENV}"
            )
        if pause == _POLL_S[0]:
            log.debug("waiting for %s", key)
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, _POLL_S[1])


def _holders(handle) -> str:
    """Who holds the lock, from /proc/locks (Linux): each holder's pid and command line."""
    # Matched on the inode number alone: on overlay file systems the device /proc/locks shows is
    # not the one fstat reports.
    inode = str(os.fstat(handle.fileno()).st_ino)
    pids = []
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters read "1: -> FLOCK ..."
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == inode:
                    pids.append(int(fields[4]))
    except (OSError, ValueError):
        return "its holder is unknown (no /proc/locks)"
    pids = [pid for pid in dict.fromkeys(pids) if pid not in (0, -1)]
    if not pids:
        return "its holder is unknown"
    return "held by " + ", ".join(f"pid {pid} ({_command(pid)})" for pid in pids)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "command unknown"
    return " ".join(words.split())[:200] or "command unknown"
