"""The results table people read first, for a terminal: the `leaderboard` view's rows (warehouse/views.py),
L3 approaches by hF1, then NLI by L1 F1."""

from __future__ import annotations

import polars as pl

# (column, header, width, format); text columns are cut to their width so a row fits 120 columns.
_COLUMNS = (
    ("approach", "approach", 20, "s"),
    ("model", "model", 38, "s"),
    ("variant", "variant", 10, "s"),
    ("strict", "strict", 6, ".3f"),
    ("lenient", "lenient", 7, ".3f"),
    ("products", "products", 8, "d"),
    ("latency_per_product_ms", "ms/prod", 7, ".1f"),
    ("evaluation", "evaluation", 9, "s"),
)


def _cell(value, width: int, spec: str) -> str:
    if value is None:
        return "-".rjust(width) if spec != "s" else "-".ljust(width)
    if spec == "s":
        text = str(value)
        return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)
    return format(value, spec).rjust(width)


def leaderboard_text(board: pl.DataFrame) -> str:
    """The leaderboard for a terminal: one block per task, figures to 3 decimals, at most 120 columns."""
    if board.is_empty():
        return "no results yet"
    header = "  ".join(title.ljust(width) if spec == "s" else title.rjust(width) for _, title, width, spec in _COLUMNS)
    lines = []
    for (task,), rows in board.group_by("task", maintain_order=True):
        lines += [task, header]
        for row in rows.iter_rows(named=True):
            lines.append("  ".join(_cell(row.get(name), width, spec) for name, _, width, spec in _COLUMNS).rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()
