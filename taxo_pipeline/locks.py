"""A cross-process file lock (flock) for stores that concurrent Dagster step processes share: runs
launched together from the UI, the CLI and tests all queue on the same lock file."""

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_held = threading.local()  # lock paths this thread holds: nested blocks must not wait on themselves


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing) for the block: exclusive, or `shared` with other
    shared holders. Blocks until granted; the kernel drops it if the process dies."""
    held = _held.__dict__.setdefault("paths", set())
    key = str(path)
    if key in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.debug("waiting for %s", path)
            fcntl.flock(handle, mode)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)
