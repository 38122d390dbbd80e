"""Errors shown to users: each message names the file, row or model and says what is wrong."""


class InputError(ValueError):
    """Bad input (a source, a row, a model id); raised before anything is written."""


class RunFailedError(RuntimeError):
    """A launched run failed; the message carries the failing step's own error."""
