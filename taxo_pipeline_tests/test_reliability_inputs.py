"""Bad inputs get clear errors naming the file, line or model (issue 12): empty files, directories,
malformed taxonomy lines and model ids that cannot name a file or a Chroma collection."""

import itertools

import numpy as np
import pytest

from taxo_pipeline.dataset.fetch import resolve_source
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import parse_categories
from taxo_pipeline.errors import InputError
from taxo_pipeline.retrieval.categories import CategoryDocuments
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.sie.catalogue import load_catalogue, model_slug, validate_model_id
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
    for spec in load_catalogue():
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
