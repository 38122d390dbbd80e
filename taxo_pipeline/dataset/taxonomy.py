"""Shopify taxonomy: parse categories.txt and build the taxonomy trimmed to a depth: L3, the reference's
(seed-rules.md), or any number of levels (TAXO_DEPTH)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from taxo_pipeline.errors import InputError

SEPARATOR = " > "
MAX_LEVEL = 3  # the reference's depth, and the default
FULL = "full"  # every level: no trimming
Depth = int | None  # levels kept; None: every level
GID_FORM = "gid://shopify/TaxonomyCategory/<id>"
GID_RE = re.compile(r"gid://shopify/TaxonomyCategory/[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_BAD_NAME_CHARS = re.compile(r"[<>\x00-\x1f\x7f]")


def parse_categories(path: Path) -> list[str]:
    """Valid categories: the right-hand side of every non-blank, non-# line, stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"taxonomy file {path} is not UTF-8 text: {exc}") from exc
    categories = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            categories.append(_category(line, f"taxonomy file {path}, line {number}"))
    if not categories:
        raise InputError(f"taxonomy file {path} holds no categories")
    return categories


def _category(line: str, where: str) -> str:
    """The path of one `<gid> : <path>` line; anything else (a stray text line, a mangled file)
    would otherwise become a node of the taxonomy and a label to predict."""
    gid, found, category = line.partition(" : ")
    if not found or not GID_RE.fullmatch(gid.strip()):
        raise InputError(f"{where}: expected '<gid> : <path>' where <gid> is {GID_FORM}: {line[:120]!r}")
    category = category.strip()
    if not category:
        raise InputError(f"{where}: empty category path: {line[:120]!r}")
    names = split_path(category)
    if not all(names):
        raise InputError(f"{where}: empty category name in the path: {line[:120]!r}")
    if any(_BAD_NAME_CHARS.search(name) for name in names):
        raise InputError(
            f"{where}: category names may not contain '<', '>' or control characters "
            f"(nodes are separated by ' > '): {line[:120]!r}"
        )
    return category


def split_path(path: str) -> list[str]:
    return [part.strip() for part in path.split(SEPARATOR)]


def trim_path(path: str, max_level: Depth = MAX_LEVEL) -> str:
    """Keep the first `max_level` nodes of a path (every node for None)."""
    return SEPARATOR.join(split_path(path)[:max_level])


def parse_depth(value: str) -> Depth:
    """`full` (None) or a positive whole number of levels; ValueError otherwise."""
    text = value.strip().lower()
    if text == FULL:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise ValueError(f"expected {FULL} or a positive whole number of levels, got {value!r}")
    return int(text)


def depth_label(depth: Depth) -> str:
    """The depth as TAXO_DEPTH spells it (`3`, `full`): the `depth` column of the result tables."""
    return FULL if depth is None else str(depth)


def depth_suffix(depth: Depth) -> str:
    """The depth in file and table names: `l3` (the reference's names), `full`, `l5` ..."""
    return FULL if depth is None else f"l{depth}"


@dataclass(frozen=True)
class TrimmedTaxonomy:
    """The taxonomy trimmed to `depth` levels (L3, the reference's, unless TAXO_DEPTH says otherwise)."""

    paths: list[str]  # sorted, unique, every ancestor node included
    depth: Depth = MAX_LEVEL

    @classmethod
    def from_categories(cls, categories: list[str], depth: Depth = MAX_LEVEL) -> TrimmedTaxonomy:
        return cls(sorted({trim_path(c, depth) for c in categories}), depth)

    @property
    def name(self) -> str:
        """How messages name it: `L3 taxonomy`, `full taxonomy`, `L5 taxonomy`."""
        return f"{FULL if self.depth is None else f'L{self.depth}'} taxonomy"

    def trim(self, path: str) -> str:
        return trim_path(path, self.depth)

    def level_counts(self) -> dict[int, int]:
        return level_counts(self.paths)

    def l1_labels(self) -> list[str]:
        return [p for p in self.paths if SEPARATOR not in p]

    def to_arrow(self) -> pa.Table:
        return taxonomy_table(self.paths)


def level_counts(paths: list[str]) -> dict[int, int]:
    """Nodes per level (1 for L1)."""
    counts: dict[int, int] = {}
    for path in paths:
        level = len(split_path(path))
        counts[level] = counts.get(level, 0) + 1
    return counts


def taxonomy_table(paths: list[str]) -> pa.Table:
    """`path, name, level, parent, l1` per node: the warehouse's taxonomy tables."""
    nodes = [split_path(p) for p in paths]
    return pa.table(
        {
            "path": paths,
            "name": [n[-1] for n in nodes],
            "level": pa.array([len(n) for n in nodes], pa.int32()),
            "parent": [SEPARATOR.join(n[:-1]) or None for n in nodes],
            "l1": [n[0] for n in nodes],
        }
    )
