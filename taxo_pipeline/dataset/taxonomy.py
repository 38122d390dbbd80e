"""Shopify taxonomy: parse categories.txt and build the L3 taxonomy (seed-rules.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from taxo_pipeline.errors import InputError

SEPARATOR = " > "
MAX_LEVEL = 3


def parse_categories(path: Path) -> list[str]:
    """Valid categories: the right-hand side of every non-blank, non-# line, stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"taxonomy file {path} is not UTF-8 text: {exc}") from exc
    categories = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if " : " not in line:
            raise InputError(
                f"taxonomy file {path}, line {number}: expected '<gid> : <path>' (no ' : ' found): {line[:120]!r}"
            )
        category = line.split(" : ", 1)[1].strip()
        if not category:
            raise InputError(f"taxonomy file {path}, line {number}: empty category path: {line[:120]!r}")
        categories.append(category)
    if not categories:
        raise InputError(f"taxonomy file {path} holds no categories")
    return categories


def split_path(path: str) -> list[str]:
    return [part.strip() for part in path.split(SEPARATOR)]


def trim_path(path: str, max_level: int = MAX_LEVEL) -> str:
    """Keep the first `max_level` nodes of a path."""
    return SEPARATOR.join(split_path(path)[:max_level])


@dataclass(frozen=True)
class TaxonomyL3:
    paths: list[str]  # sorted, unique, L1 and L2 nodes included

    @classmethod
    def from_categories(cls, categories: list[str]) -> TaxonomyL3:
        return cls(sorted({trim_path(c) for c in categories}))

    def level_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for path in self.paths:
            level = len(split_path(path))
            counts[level] = counts.get(level, 0) + 1
        return counts

    def l1_labels(self) -> list[str]:
        return [p for p in self.paths if SEPARATOR not in p]

    def to_arrow(self) -> pa.Table:
        nodes = [split_path(p) for p in self.paths]
        return pa.table(
            {
                "path": self.paths,
                "name": [n[-1] for n in nodes],
                "level": pa.array([len(n) for n in nodes], pa.int32()),
                "parent": [SEPARATOR.join(n[:-1]) or None for n in nodes],
                "l1": [n[0] for n in nodes],
            }
        )
