"""What every command shares: logging set-up, and user errors printed without a traceback.

Every line a command writes to stderr goes through `redact`: no credentials of SIE_BASE_URL show."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from taxo_pipeline import settings
from taxo_pipeline.defs.runner import RUN_EVENTS_LOGGER  # a run's Dagster events: to the log file only
from taxo_pipeline.errors import InputError, RunFailedError
from taxo_pipeline.sie.client import SIEInferenceError
from taxo_pipeline.sie.local_process import LocalServerError
from taxo_pipeline.sie.redaction import RedactingFilter, redact

# Errors whose message says all a user needs.
USER_ERRORS: tuple[type[Exception], ...] = (InputError, SIEInferenceError, LocalServerError, FileNotFoundError, LookupError)


# Records a person reads at the terminal: taxo-pipeline's own progress, and anyone's warnings.
_OWN = "taxo_pipeline"


class _Terminal(logging.Filter):
    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == RUN_EVENTS_LOGGER:
            return False
        if self.verbose:
            return True
        own = record.name == _OWN or record.name.startswith(_OWN + ".")
        return record.levelno >= (logging.INFO if own else logging.WARNING)


VERBOSE = False  # set by configure_logging for the command's runs


def log_file() -> Path:
    """Every command's full log: debug lines, libraries' messages and the runs' Dagster events."""
    return settings.current().data_dir / "logs" / "taxo-pipeline.log"


def configure_logging(verbose: bool = False) -> None:
    """Progress lines (and warnings) to stderr, everything to `log_file()`; `verbose` prints everything."""
    global VERBOSE
    VERBOSE = verbose
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in [h for h in root.handlers if getattr(h, "taxo_pipeline", False)]:  # a second command in-process
        root.removeHandler(handler)
        handler.close()
    terminal = logging.StreamHandler(sys.stderr)
    terse = "%(asctime)s %(message)s"
    terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else terse, "%H:%M:%S"))
    terminal.addFilter(_Terminal(verbose))
    handlers: list[logging.Handler] = [terminal]
    try:
        path = log_file()  # a bad setting is reported by the command itself, after logging is set up
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    except (OSError, InputError):  # a bad setting or a read-only data folder must not stop a command; the terminal still gets progress
        pass
    for handler in handlers:
        handler.taxo_pipeline = True
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    logging.captureWarnings(True)  # library warnings go to the file (and, once each, to the terminal)
    # httpx logs every request at INFO and, like Dagster's helpers, would drown the progress lines.
    for noisy in ("httpx", "httpcore", "alembic", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def dagster_console_level() -> str:
    """The level of Dagster's console logger in command runs: its events go to the log file instead."""
    return "DEBUG" if VERBOSE else "CRITICAL"


def command_instance():
    """The persistent Dagster instance (DAGSTER_HOME) the commands and `taxo-pipeline dev` share."""
    from taxo_pipeline.defs.runner.runs import command_instance  # imports Dagster: only commands that run need it

    return command_instance(settings.current().dagster_home)


def materialize(selection, **kwargs):
    """One in-process run in the commands' instance (defs/runner/runs.py `materialize`, whose arguments it
    takes besides the instance), Dagster's console logger at the terminal's level."""
    from taxo_pipeline.defs.runner.runs import materialize

    return materialize(selection, instance=command_instance(), console_level=dagster_console_level(), **kwargs)


def run_command(
    name: str, command: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, verbose: bool = False
) -> int:
    configure_logging(verbose)
    try:
        return command(argv)
    except (*USER_ERRORS, RunFailedError) as exc:
        print(f"{name}: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
