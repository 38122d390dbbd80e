"""What every command shares: logging set-up, and user errors printed without a traceback.

Every line a command writes to stderr goes through `redact`: no credentials of SIE_BASE_URL show."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.client import SIEInferenceError
from taxo_pipeline.sie.local_process import LocalServerError
from taxo_pipeline.sie.redaction import RedactingFilter, redact

# Errors whose message says all a user needs.
USER_ERRORS: tuple[type[Exception], ...] = (InputError, SIEInferenceError, LocalServerError, FileNotFoundError, LookupError)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # httpx logs every request at INFO; progress lines are what matter here.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def run_command(
    name: str, command: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, verbose: bool = False
) -> int:
    from taxo_pipeline.cli.runs import RunFailedError

    configure_logging(verbose)
    try:
        return command(argv)
    except (*USER_ERRORS, RunFailedError) as exc:
        print(f"{name}: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
