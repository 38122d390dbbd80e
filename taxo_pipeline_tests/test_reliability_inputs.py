"""Bad inputs get clear errors naming the file, line or model (issue 12): empty files, directories,
malformed taxonomy lines and model ids that cannot name a file or a Chroma collection; catalogues to
classify with a bad row anywhere, ids that are not strings, and two files with one stem (issue 22)."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxo_pipeline.classification.product_catalogue import read_shards, validate_catalogue
from taxo_pipeline.classification.run import catalogue_name
from taxo_pipeline.dataset.fetch import resolve_source
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import parse_categories
from taxo_pipeline.errors import InputError
from taxo_pipeline.retrieval.categories import CategoryDocuments
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.model_catalogue import load_catalogue, model_slug, validate_model_id
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.factories import SHARED_DATA, TAXONOMY

GID = "gid://shopify/TaxonomyCategory/<id>"

# --- product and taxonomy files ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["products.csv", "products.jsonl", "products.parquet"])
def test_empty_products_file_names_the_file(tmp_path, name):
    empty = tmp_path / name
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=rf"^products file {empty} is empty \(0 bytes\)$"):
        read_products(empty)


def test_csv_with_only_blank_lines_names_the_file(tmp_path):
    blank = tmp_path / "products.csv"
    blank.write_text("\n\n")
    with pytest.raises(InputError, match=rf"^products file {blank} holds no header row"):
        read_products(blank)


def test_directory_as_products_source_says_it_is_a_directory(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with pytest.raises(InputError, match=rf"^products file {folder} is a directory, not a file \(set TAXO_PRODUCTS"):
        resolve_source(
            str(folder), what="products", env_var="TAXO_PRODUCTS", cache_dir=tmp_path / "cache", cache_name="p.parquet"
        )
    # A directory that looks like a Parquet file must not be read as a dataset of its parts.
    dataset_dir = tmp_path / "train.parquet"
    dataset_dir.mkdir()
    with pytest.raises(InputError, match=rf"^products file {dataset_dir} is a directory, not a file"):
        read_products(dataset_dir)


def test_missing_products_source_still_says_it_does_not_exist(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(InputError, match=rf"^products file {missing} does not exist"):
        resolve_source(str(missing), what="products", env_var="TAXO_PRODUCTS", cache_dir=tmp_path, cache_name="x")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("random text : ]]] > <script>", f"expected '<gid> : <path>' where <gid> is {GID}"),
        ("gid://shopify/Product/aa-1 : Apparel & Accessories", f"where <gid> is {GID}"),
        ("gid://shopify/TaxonomyCategory/ : Apparel & Accessories", f"where <gid> is {GID}"),
        ("gid://shopify/TaxonomyCategory/aa-1 : Apparel >  > Hats", "empty category name in the path"),
        ("gid://shopify/TaxonomyCategory/aa-1 : Apparel > <script>", "category names may not contain '<', '>'"),
        ("gid://shopify/TaxonomyCategory/aa-1 : Apparel>Hats", "category names may not contain '<', '>'"),
    ],
)
def test_malformed_taxonomy_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "categories.txt"
    path.write_text(f"# header\n\ngid://shopify/TaxonomyCategory/aa : Apparel & Accessories\n{line}\n")
    with pytest.raises(InputError, match=rf"^taxonomy file {path}, line 4: ") as caught:
        parse_categories(path)
    assert problem in str(caught.value)
    assert repr(line) in str(caught.value)


@pytest.mark.parametrize("name", ["categories.txt", "2025-08-unstable/categories.txt"])
def test_real_taxonomy_files_parse_to_every_category(shared_data, name):
    path = SHARED_DATA / "shopify-taxonomy" / name
    lines = [line for line in path.read_text().splitlines() if line.startswith("gid://")]
    assert parse_categories(path) == [line.split(" : ", 1)[1].strip() for line in lines]
    assert len(lines) == {"categories.txt": 14606, "2025-08-unstable/categories.txt": 10595}[name]


def test_taxonomy_directory_says_it_is_a_directory(tmp_path):
    with pytest.raises(InputError, match=rf"^taxonomy file {tmp_path} is a directory, not a file \(set TAXO_TAXONOMY"):
        resolve_source(str(tmp_path), what="taxonomy", env_var="TAXO_TAXONOMY", cache_dir=tmp_path, cache_name="t")
    assert TAXONOMY.is_file()


# --- model ids -----------------------------------------------------------------------------------


def _candidate_ids():
    parts = ["".join(chars) for n in range(1, 5) for chars in itertools.product("a_.-", repeat=n)]
    for org, name in itertools.product(parts, repeat=2):
        try:
            yield validate_model_id(f"{org}/{name}")
        except InputError:
            continue


def test_model_slug_is_injective():
    ids = list(_candidate_ids())
    assert len(ids) > 5_000
    slugs = {model_slug(model_id) for model_id in ids}
    assert len(slugs) == len(ids)


def test_model_slug_keeps_the_catalogued_ids_names():
    for spec in load_catalogue(Workspace.from_env().settings.models):
        assert spec.slug == spec.id.replace("/", "__")


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("a__b/c", "the organisation part may not contain '__'"),
        ("org/b..c", "may not contain '..'"),
        ("o..rg/b", "may not contain '..'"),
        ("org/" + "x" * 97, "is 101 characters long; at most 100"),
    ],
)
def test_model_ids_that_cannot_name_a_file_or_collection_are_rejected(bad, problem):
    with pytest.raises(InputError, match=f"invalid model id {bad!r}") as caught:
        validate_model_id(bad)
    assert problem in str(caught.value)


@pytest.mark.parametrize("model_id", ["a/b__c", "a/b.", "a-/b-", "a./b_", "1/2", "org/" + "x" * 96])
def test_every_valid_model_id_names_a_real_chroma_collection(tmp_path, model_id):
    index = CategoryIndex(tmp_path, model_slug(validate_model_id(model_id)), "full-path")
    index.sync(CategoryDocuments(ids=["A"], documents=["a"], levels=[1]), np.ones((1, 4)))
    assert index.count() == 1


# --- catalogues to classify (issue 22) -------------------------------------------------------------

TEXTS = {"product_title": "Hat", "product_description": ""}
JSONL_TEXTS = '"product_title": "Hat", "product_description": ""'
HEADER = b"product_id,product_title,product_description\n"


def _parquet(path, ids, kind):
    pq.write_table(pa.table({"product_id": pa.array(ids, kind), "product_title": ["Hat"] * len(ids),
                             "product_description": [""] * len(ids)}), path)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        # JSON Lines: every record is checked, not only the first
        ("first-lacks-id.jsonl", f"{{{JSONL_TEXTS}}}\n{{\"product_id\": \"z\", {JSONL_TEXTS}}}\n",
         "line 2 has id field(s) product_id but line 1 has none: give every record the same id fields"),
        ("later-lacks-id.jsonl", f"{{\"product_id\": \"a\", {JSONL_TEXTS}}}\n\n{{{JSONL_TEXTS}}}\n",
         "line 3 has id field(s) none but line 1 has product_id"),
        ("lacks-text.jsonl", f"{{\"product_id\": \"a\", {JSONL_TEXTS}}}\n{{\"product_id\": \"b\", \"product_title\": \"Cap\"}}\n",
         "line 2 lacks product_description: every record needs product_title and product_description"),
        ("float-id.jsonl", f"{{\"product_id\": 1, {JSONL_TEXTS}}}\n{{\"product_id\": 1.0, {JSONL_TEXTS}}}\n",
         "line 2: product_id is 1.0; product_id values must be strings or whole numbers: write it as a JSON string"),
        ("bool-id.jsonl", f"{{\"product_id\": true, {JSONL_TEXTS}}}\n", "line 1: product_id is true;"),
        ("null-id.jsonl", f"{{\"product_id\": null, {JSONL_TEXTS}}}\n", "line 1: product_id is null;"),
        ("bad-utf8.jsonl", f"{{\"product_id\": \"a\", {JSONL_TEXTS}}}\n".encode() + b'{"product_id": "b\xff"}\n',
         "line 2: not valid UTF-8 at byte 17 (b'{\"product_id\": \"b\\xff\"}\\n'): save the file as UTF-8"),
        # CSV
        ("empty-id.csv", HEADER + b"a,Hat,\n,Cap,\n", "row 2: empty product_id (''); every product needs an id"),
        ("bad-header.csv", b"product_id,product_t\xe9tle,product_description\na,Hat,\n",
         "header (line 1): not valid UTF-8 at byte 20"),
        ("bad-text.csv", HEADER + b"a,Hat,\nb,Cap,\nc,Sc\xe4rf,warm\n",
         r"row 3: product_title is not valid UTF-8 at byte 2 (b'Sc\xe4rf'): save the file as UTF-8"),
        # Parquet
        ("float-ids.parquet", ([1.0, 2.0], pa.float64()), "column product_id holds double values; ids must be strings"),
        ("null-id.parquet", (["a", None], pa.string()), "row 2: empty product_id (None)"),
    ],
)
def test_a_bad_catalogue_row_is_named_with_its_fix(tmp_path, name, content, problem):
    path = tmp_path / name
    if name.endswith(".parquet"):
        _parquet(path, *content)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(InputError) as caught:
        list(read_shards(path, 2))
    assert str(caught.value).startswith(f"products file {path}")
    assert problem in str(caught.value)


def test_catalogue_ids_are_strings_as_given_and_json_whole_numbers_their_digits(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps({"product_id": i, **TEXTS}) + "\n" for i in ("007", 7, " 7", 10**20)))
    (shard,) = read_shards(path, 10)
    assert shard.products["product_id"].to_list() == ["007", "7", " 7", "100000000000000000000"]
    # a JSON 7 and a JSON "7" are one id: the second is a repeat
    path.write_text("".join(json.dumps({"product_id": i, **TEXTS}) + "\n" for i in (7, "8", "7")))
    with pytest.raises(InputError, match=r"line 3 repeats product_id '7' \(first at line 1\); ids must be unique"):
        validate_catalogue(path, 2)


def test_two_catalogue_files_never_share_a_results_folder(tmp_path, monkeypatch):
    (tmp_path / "other").mkdir()
    names = [catalogue_name(tmp_path / n) for n in ("good.jsonl", "other/good.csv", "a b.csv", "a_b.csv", "a?b.csv")]
    assert len(set(names)) == 5
    assert all(re.fullmatch(r"(good|a_b)-[0-9a-f]{10}", n) for n in names)  # readable, then a hash of the path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.csv").symlink_to(tmp_path / "a b.csv")
    assert catalogue_name(Path("a b.csv")) == catalogue_name(tmp_path / "other" / ".." / "a b.csv") == names[2]
    assert catalogue_name(tmp_path / "link.csv") == names[2]  # one file, one catalogue
