"""Whether a process of this host is still running (for state its writer left behind when killed)."""

import os


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this host (a zombie counts: it is gone once reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
