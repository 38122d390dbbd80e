"""Cut texts longer than any model can use before they are sent, and count them so the caller can
say so: a 100k-character description is otherwise sent whole, for the server to truncate silently."""

from __future__ import annotations

import os
from collections.abc import Sequence

from taxo_pipeline.errors import InputError

MAX_TEXT_CHARS_ENV = "TAXO_MAX_TEXT_CHARS"
# Four characters per token covers the longest window in models.yaml (8,192 tokens) for ordinary text.
DEFAULT_MAX_TEXT_CHARS = 32_768


def max_text_chars() -> int:
    """The longest text sent to a model (TAXO_MAX_TEXT_CHARS, default 32,768 characters)."""
    value = os.environ.get(MAX_TEXT_CHARS_ENV)
    if not value:
        return DEFAULT_MAX_TEXT_CHARS
    if not value.strip().isdigit() or int(value) <= 0:
        raise InputError(f"{MAX_TEXT_CHARS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def truncate_for_model(texts: Sequence[str], max_chars: int) -> tuple[list[str], int]:
    """`texts` with each cut to its first `max_chars` characters, and how many were cut."""
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer, got {max_chars!r}")
    truncated = sum(len(text) > max_chars for text in texts)
    return [text[:max_chars] for text in texts], truncated
