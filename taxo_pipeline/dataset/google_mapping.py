"""Shopify category -> Google product category, from Shopify's published mapping (Shopify/product-taxonomy).

Google Merchant Center feeds want a `google_product_category` (a Google id or full name) for every product.
Upstream maps Shopify 2025-08 to Google 2021-09-21; the pipeline's taxonomy is a later release, so a path
the mapping lacks takes its nearest mapped ancestor's Google category (Google's tree is coarser anyway).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from taxo_pipeline.dataset.fetch import cache_name_for, resolve_source
from taxo_pipeline.dataset.taxonomy import SEPARATOR, split_path
from taxo_pipeline.errors import InputError

_UPSTREAM = "https://raw.githubusercontent.com/Shopify/product-taxonomy/main"
GOOGLE_MAPPING_URL = f"{_UPSTREAM}/dist/en/integrations/google/shopify_2025-08_to_google_2021-09-21.txt"
GOOGLE_CATEGORIES_URL = f"{_UPSTREAM}/data/integrations/google/2021-09-21/full_names.yml"
# Names of the default downloads in the data directory.
GOOGLE_MAPPING_FILE = "shopify_2025-08_to_google_2021-09-21.txt"
GOOGLE_CATEGORIES_FILE = "google_2021-09-21_full_names.yml"

_FROM = "→"  # starts a line with a Shopify full path
_TO = "⇒"  # starts a line with the Google full path it maps to


@dataclass(frozen=True, eq=False)
class GoogleMapping:
    """Shopify full path -> (Google id, Google full name), for every path the mapping file names."""

    targets: Mapping[str, tuple[int, str]]

    @functools.cached_property
    def fingerprint(self) -> str:
        """Of the mapping's content: a classified catalogue is written again when it changes."""
        return hashlib.sha256(json.dumps(sorted(self.targets.items())).encode()).hexdigest()[:16]

    def lookup(self, shopify_path: str) -> tuple[int, str] | None:
        """The Google category of `shopify_path`, or of its nearest mapped ancestor; None when no level
        is mapped (`Uncategorized`, and top levels newer than the mapping such as `Services`)."""
        names = split_path(shopify_path.strip())
        for depth in range(len(names), 0, -1):
            target = self.targets.get(SEPARATOR.join(names[:depth]))
            if target is not None:
                return target
        return None

    def google_columns(self, paths: Sequence[str | None]) -> tuple[list[int | None], list[str | None]]:
        """Google ids and full names for a column of Shopify paths (None or empty: None)."""
        found: dict[str, tuple[int, str] | None] = {}  # a column repeats a few hundred paths
        ids: list[int | None] = []
        names: list[str | None] = []
        for path in paths:
            if not path:
                target = None
            elif path in found:
                target = found[path]
            else:
                target = found[path] = self.lookup(path)
            ids.append(None if target is None else target[0])
            names.append(None if target is None else target[1])
        return ids, names


def load_google_mapping(mapping_file: Path, names_file: Path) -> GoogleMapping:
    """Parse Shopify's `shopify_*_to_google_*.txt` and Google's `full_names.yml`."""
    ids = _parse_full_names(Path(names_file))
    targets: dict[str, tuple[int, str]] = {}
    for shopify, google, where in _parse_pairs(Path(mapping_file)):
        if google not in ids:
            raise InputError(
                f"{where}: Google category {google!r} has no id in {names_file}: use the full_names.yml of "
                "the Google taxonomy release the mapping names (TAXO_GOOGLE_CATEGORIES)"
            )
        targets[shopify] = (ids[google], google)
    return GoogleMapping(MappingProxyType(targets))  # read-only: one parsed mapping is shared by every caller


def google_mapping(data_dir: Path, mapping_source: str, names_source: str) -> GoogleMapping:
    """The mapping from two sources (paths or URLs; downloads cached in `data_dir`), parsed once per
    version of the files."""
    mapping_file, names_file = (
        resolve_source(source, what=what, env_var=env_var, cache_dir=data_dir,
                       cache_name=cache_name_for(source, default_url, default_name))  # fmt: skip
        for source, what, env_var, default_url, default_name in (
            (mapping_source, "Shopify-to-Google category mapping", "TAXO_GOOGLE_MAPPING", GOOGLE_MAPPING_URL,
             GOOGLE_MAPPING_FILE),
            (names_source, "Google product categories", "TAXO_GOOGLE_CATEGORIES", GOOGLE_CATEGORIES_URL,
             GOOGLE_CATEGORIES_FILE),
        )  # fmt: skip
    )
    return _cached(mapping_file, mapping_file.stat().st_mtime_ns, names_file, names_file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _cached(mapping_file: Path, mapping_mtime_ns: int, names_file: Path, names_mtime_ns: int) -> GoogleMapping:
    return load_google_mapping(mapping_file, names_file)


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    return enumerate(text.splitlines(), start=1)


def _parse_pairs(path: Path) -> Iterator[tuple[str, str, str]]:
    """(Shopify path, Google path, where) for each `→ shopify` line followed by a `⇒ google` line.

    A `→` with no `⇒` is a category upstream left unmapped: it is skipped, so it takes its ancestor's."""
    what = "Shopify-to-Google mapping file"
    shopify: str | None = None
    has_target = False
    mapped: dict[str, str] = {}
    for number, line in _lines(path, what):
        where = f"{what} {path}, line {number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith(_FROM):
            shopify, has_target = _path(stripped[len(_FROM) :], where, line), False
        elif stripped.startswith(_TO):
            if shopify is None:
                raise InputError(f"{where}: a '⇒ <google path>' line with no '→ <shopify path>' line before it")
            google = _path(stripped[len(_TO) :], where, line)
            if has_target:
                continue  # upstream may list several targets for one category; a feed takes one, the first
            if mapped.get(shopify, google) != google:
                raise InputError(f"{where}: {shopify!r} is mapped twice, to {mapped[shopify]!r} and to {google!r}")
            mapped[shopify], has_target = google, True
            yield shopify, google, where
        else:
            raise InputError(
                f"{where}: expected '→ <shopify path>', '⇒ <google path>', a '#' comment or a blank line, "
                f"got {line[:120]!r}; is {path} Shopify's shopify_*_to_google_*.txt (TAXO_GOOGLE_MAPPING)?"
            )
    if not mapped:
        raise InputError(f"{what} {path} holds no '→ ... ⇒ ...' pairs (TAXO_GOOGLE_MAPPING names the wrong file?)")


def _path(text: str, where: str, line: str) -> str:
    names = split_path(text.strip())
    if not all(names):
        raise InputError(f"{where}: empty category name in the path: {line[:120]!r}")
    return SEPARATOR.join(names)


def _parse_full_names(path: Path) -> dict[str, int]:
    """Google full name -> id from full_names.yml: a YAML list of `- id: N` / `full_name: ...` items.

    Read line by line (the file is this one flat shape; PyYAML takes about a second): plain, 'single' and
    "double" quoted values are understood, anything else is an error naming the line."""
    what = "Google categories file"
    items: list[tuple[dict[str, str], str]] = []
    for number, line in _lines(path, what):
        where = f"{what} {path}, line {number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if line.startswith("- "):
            items.append(({}, where))
            entry = line[2:]
        elif line.startswith(" ") and items:
            entry = line
        else:
            raise InputError(f"{where}: expected '- id: <number>' or '  full_name: <name>', got {line[:120]!r}")
        key, colon, value = entry.strip().partition(":")
        if not colon or key not in ("id", "full_name") or key in items[-1][0]:
            raise InputError(
                f"{where}: expected one 'id: <number>' and one 'full_name: <name>' per item, got {line[:120]!r}"
            )
        items[-1][0][key] = _scalar(value.strip(), where, line)
    ids: dict[str, int] = {}
    for fields, where in items:
        if set(fields) != {"id", "full_name"}:
            raise InputError(f"{where}: the item lacks {'id' if 'id' not in fields else 'full_name'}")
        if not (fields["id"].isascii() and fields["id"].isdigit()):
            raise InputError(f"{where}: id {fields['id']!r} is not a whole number")
        name = _path(fields["full_name"], where, fields["full_name"])
        if name in ids and ids[name] != int(fields["id"]):
            raise InputError(f"{where}: {name!r} has two ids, {ids[name]} and {fields['id']}")
        ids[name] = int(fields["id"])
    if not ids:
        raise InputError(f"{what} {path} holds no categories (TAXO_GOOGLE_CATEGORIES names the wrong file?)")
    return ids


def _scalar(value: str, where: str, line: str) -> str:
    if value[:1] == "'" and len(value) > 1 and value.endswith("'"):
        return value[1:-1].replace("''", "'")
    if value[:1] == '"' and len(value) > 1 and value.endswith('"'):
        try:
            return json.loads(value)  # YAML's double-quoted escapes, as far as names use them, are JSON's
        except json.JSONDecodeError:
            pass
    elif value and value[0] not in "'\"[{&*!|>%@`":
        return value.split(" #", 1)[0].rstrip()
    raise InputError(f"{where}: cannot read the value {value[:80]!r} (expected a plain or quoted name): {line[:120]!r}")
