"""Cut texts longer than any model can use before they are sent, and count them so the caller can
say so: a 100k-character description is otherwise sent whole, for the server to truncate silently."""

from __future__ import annotations

from collections.abc import Sequence


def truncate_for_model(texts: Sequence[str], max_chars: int) -> tuple[list[str], int]:
    """`texts` with each cut to its first `max_chars` characters, and how many were cut."""
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer, got {max_chars!r}")
    truncated = sum(len(text) > max_chars for text in texts)
    return [text[:max_chars] for text in texts], truncated
