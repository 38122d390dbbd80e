"""Whether a process of this host is still running, for what a killed process left behind (temp files,
runs marked STARTED), and the environment a child process (an SIE server, `dagster dev`) starts with."""

import os
from pathlib import Path

_PROC = Path("/proc")


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot), or None once it is gone or a zombie. A later
    process that reuses the pid has another start. Without /proc (not Linux): "" for any live pid."""
    if pid <= 0:
        return None
    if not _PROC.is_dir():
        return "" if _pid_exists(pid) else None
    try:
        # the command name (field 2) may hold spaces and parentheses: count fields after its last ")"
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def pid_alive(pid: int) -> bool:
    return process_start(pid) is not None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of process group `pgid` still runs (zombies, dead but not reaped, do not count).
    Without /proc (not Linux): whether the group has any process, zombies included."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # after the command name: state, ppid, pgrp ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this one's, whole (the child reads its own variables), with `overrides`."""
    return {**os.environ, **overrides}
