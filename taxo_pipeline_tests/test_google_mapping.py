"""Shopify -> Google product category: the real mapping (Shopify 2025-08 -> Google 2021-09-21) with the
expected values read by hand from the files, the ancestor fallback for 2026-08 paths, the cache, the
settings, and malformed files naming the file and line."""

import os
import re
import time

import pytest

from taxo_pipeline.dataset.google_mapping import (
    GOOGLE_CATEGORIES_URL,
    GOOGLE_MAPPING_URL,
    google_mapping,
    load_google_mapping,
)
from taxo_pipeline.dataset.taxonomy import parse_categories
from taxo_pipeline.errors import InputError
from taxo_pipeline.settings import Settings
from taxo_pipeline_tests.factories import SHARED_DATA, TAXONOMY

GOOGLE = SHARED_DATA / "shopify-taxonomy" / "google-mapping"
MAPPING = GOOGLE / "shopify_2025-08_to_google_2021-09-21.txt"
NAMES = GOOGLE / "full_names.yml"

DRESSES = "Apparel & Accessories > Clothing > Dresses"
CLOTHING = "Apparel & Accessories > Clothing"
CLOTHING_ACCESSORIES = "Apparel & Accessories > Clothing Accessories"
POCKET_SQUARES = f"{CLOTHING_ACCESSORIES} > Pocket Squares"  # new in 2026-08
BABY_BOTTOMS = f"{CLOTHING} > Baby & Children's Clothing > Baby & Children's Bottoms"  # parent new in 2026-08 too


@pytest.fixture(scope="module")
def real():
    return load_google_mapping(MAPPING, NAMES)


def test_real_mapping_by_hand(real):
    assert len(real.targets) == 10_535  # every `→` line of the file has its `⇒`
    # mapping lines 1611-1612, full_names.yml lines 320-321
    assert real.lookup(DRESSES) == (2271, DRESSES)
    assert real.lookup("Apparel & Accessories") == (166, "Apparel & Accessories")
    assert real.lookup("Furniture") == (436, "Furniture")
    # A 3-level path Google has no category of its own for maps to another one.
    assert real.lookup(f"{CLOTHING} > Clothing Tops") == (212, f"{CLOTHING} > Shirts & Tops")
    assert real.lookup(f"{CLOTHING} > Maternity Clothing") == (1604, CLOTHING)
    assert real.lookup(f"{DRESSES} ") == (2271, DRESSES)  # stray spaces around a path do not matter


def test_2026_paths_fall_back_to_the_nearest_mapped_ancestor(real):
    mapping_text = MAPPING.read_text(encoding="utf-8")
    categories = set(parse_categories(TAXONOMY))
    for path in (POCKET_SQUARES, BABY_BOTTOMS, f"{CLOTHING} > Baby & Children's Clothing"):
        assert path in categories and f"→ {path}\n" not in mapping_text
    assert f"→ {CLOTHING_ACCESSORIES}\n⇒ {CLOTHING_ACCESSORIES}\n" in mapping_text
    assert real.lookup(POCKET_SQUARES) == (167, CLOTHING_ACCESSORIES)
    assert real.lookup(BABY_BOTTOMS) == (1604, CLOTHING)  # two levels up


def test_unmapped_top_levels_give_none(real):
    for path in ("Uncategorized", "Services", "Services > Business Services", "Product Add-Ons > Shipping Insurance"):
        assert real.lookup(path) is None


def test_every_3_level_category_maps_except_the_unmapped_top_levels(real):
    unmapped_tops = {"Bundles", "Product Add-Ons", "Services", "Uncategorized"}  # not in the 2025-08 mapping
    level3 = {" > ".join(path.split(" > ")[:3]) for path in parse_categories(TAXONOMY)}
    missing = [p for p in level3 if real.lookup(p) is None and p.split(" > ")[0] not in unmapped_tops]
    assert not missing
    assert len(level3) == 1863


def test_google_columns_caches_distinct_paths(real):
    ids, names = real.google_columns([DRESSES, None, "", "Uncategorized", DRESSES, POCKET_SQUARES])
    assert ids == [2271, None, None, None, 2271, 167]
    assert names == [DRESSES, None, None, None, DRESSES, CLOTHING_ACCESSORIES]


def test_real_load_is_quick():
    started = time.perf_counter()
    load_google_mapping(MAPPING, NAMES)
    assert time.perf_counter() - started < 2.0  # about 0.1 s on a laptop core


# --- small files ------------------------------------------------------------------------------------

SMALL_MAPPING = """# Shopify Product Taxonomy - Mapping shopify/2025-08-unstable to google/2021-09-21
# → {base taxonomy category name}

→ A
⇒ Ga

→ A > B
⇒ Ga > Gb

→ A > B > C

→ A > D
⇒ Ga
⇒ Ga > Gb
"""
SMALL_NAMES = """---
- id: 1
  full_name: Ga
- id: 22
  full_name: 'Ga > Gb'
- full_name: "Gc \\u00e9"
  id: '3'
"""


def small_files(tmp_path, mapping=SMALL_MAPPING, names=SMALL_NAMES):
    (tmp_path / "map.txt").write_text(mapping, encoding="utf-8")
    (tmp_path / "names.yml").write_text(names, encoding="utf-8")
    return tmp_path / "map.txt", tmp_path / "names.yml"


def test_small_files(tmp_path):
    small = load_google_mapping(*small_files(tmp_path))
    assert small.targets == {"A": (1, "Ga"), "A > B": (22, "Ga > Gb"), "A > D": (1, "Ga")}
    assert small.lookup("A > B > C") == (22, "Ga > Gb")  # a `→` without `⇒` takes its parent's
    assert small.lookup("A > D > E") == (1, "Ga")  # the first of several targets
    assert small.lookup("Z") is None


def test_google_mapping_parses_once_per_file_version(tmp_path):
    mapping_file, names_file = small_files(tmp_path)
    first = google_mapping(tmp_path / "data", str(mapping_file), str(names_file))
    assert google_mapping(tmp_path / "data", str(mapping_file), str(names_file)) is first
    mapping_file.write_text(SMALL_MAPPING + "\n→ X\n⇒ Ga\n", encoding="utf-8")
    os.utime(mapping_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = google_mapping(tmp_path / "data", str(mapping_file), str(names_file))
    assert again is not first and again.lookup("X") == (1, "Ga")
    with pytest.raises(
        InputError, match=r"Google product categories file .*nope\.yml does not exist \(set TAXO_GOOGLE_CATEGORIES"
    ):
        google_mapping(tmp_path / "data", str(mapping_file), str(tmp_path / "nope.yml"))


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("→ A\n⇒ Ga\nA > B\n", r"map\.txt, line 3: expected '→ <shopify path>', '⇒ <google path>'"),
        ("⇒ Ga\n", r"map\.txt, line 1: a '⇒ <google path>' line with no '→ <shopify path>' line before it"),
        ("→ A\n⇒ Ga\n\n→ A\n⇒ Ga > Gb\n", r"map\.txt, line 5: 'A' is mapped twice, to 'Ga' and to 'Ga > Gb'"),
        ("→ A >  > B\n", r"map\.txt, line 1: empty category name in the path"),
        ("# only a header\n", r"map\.txt holds no '→ \.\.\. ⇒ \.\.\.' pairs"),
        ("→ A\n⇒ Gz\n", r"map\.txt, line 2: Google category 'Gz' has no id in .*names\.yml"),
        ("<html><body>Not Found</body></html>\n", r"map\.txt, line 1: expected '→ <shopify path>'"),
    ],
)
def test_malformed_mapping_names_file_and_line(tmp_path, mapping, message):
    with pytest.raises(InputError, match=f"^Shopify-to-Google mapping file {re.escape(str(tmp_path))}/{message}"):
        load_google_mapping(*small_files(tmp_path, mapping=mapping))


@pytest.mark.parametrize(
    "names, message",
    [
        ("- id: 1\n  full_name: Ga\nid: 2\n", r"line 3: expected '- id: <number>' or '  full_name: <name>'"),
        ("- id: 1\n  name: Ga\n", r"line 2: expected one 'id: <number>' and one 'full_name: <name>' per item"),
        ("- id: 1\n  id: 2\n", r"line 2: expected one 'id: <number>' and one 'full_name: <name>' per item"),
        ("- id: 1\n", r"line 1: the item lacks full_name"),
        ("- id: x1\n  full_name: Ga\n", r"line 1: id 'x1' is not a whole number"),
        ("- id: 1\n  full_name: Ga\n- id: 2\n  full_name: Ga\n", r"line 3: 'Ga' has two ids, 1 and 2"),
        ("- id: 1\n  full_name: 'Ga\n", r"line 2: cannot read the value"),
        ("---\n", r"holds no categories"),
    ],
)
def test_malformed_names_file_names_file_and_line(tmp_path, names, message):
    with pytest.raises(InputError, match=f"^Google categories file {re.escape(str(tmp_path))}/names\\.yml,? {message}"):
        load_google_mapping(*small_files(tmp_path, names=names))


def test_non_utf8_file_names_it(tmp_path):
    mapping_file, names_file = small_files(tmp_path)
    mapping_file.write_bytes("→ A\n⇒ Ga\n".encode("latin-1", errors="replace") + b"\xff\n")
    with pytest.raises(InputError, match=r"^Shopify-to-Google mapping file .*map\.txt is not UTF-8 text"):
        load_google_mapping(mapping_file, names_file)


def test_settings_sources():
    defaults = Settings.from_env({})
    assert (defaults.google_mapping, defaults.google_categories) == (GOOGLE_MAPPING_URL, GOOGLE_CATEGORIES_URL)
    assert GOOGLE_MAPPING_URL.endswith("/dist/en/integrations/google/shopify_2025-08_to_google_2021-09-21.txt")
    given = Settings.from_env({"TAXO_GOOGLE_MAPPING": f" {MAPPING} ", "TAXO_GOOGLE_CATEGORIES": str(NAMES)})
    assert (given.google_mapping, given.google_categories) == (str(MAPPING), str(NAMES))
