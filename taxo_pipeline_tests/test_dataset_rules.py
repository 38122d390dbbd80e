"""Taxonomy parsing, product reading, cleaning and trimming, on small hand-made inputs and the real files."""

import json

import polars as pl
import pytest

from taxo_pipeline.dataset.cleaning import clean_products
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories, trim_path
from taxo_pipeline.dataset.trimming import trim_products
from taxo_pipeline.errors import InputError
from taxo_pipeline_tests.factories import HATS, PANAMA, PANTS, RACKS, SCARVES, TAXONOMY, product, write_shard

VALID = [
    "Apparel & Accessories",
    "Apparel & Accessories > Clothing",
    PANTS,
    "Apparel & Accessories > Clothing Accessories",
    HATS,
    PANAMA,
    SCARVES,
    "Home & Garden",
    "Home & Garden > Decor",
    RACKS,
]


def test_real_taxonomy_trimmed_has_26_l1_and_1863_nodes(shared_data):
    categories = parse_categories(TAXONOMY)
    assert len(categories) == 14606
    taxonomy = TrimmedTaxonomy.from_categories(categories)
    assert taxonomy.level_counts() == {1: 26, 2: 218, 3: 1619}
    assert len(taxonomy.paths) == 1863
    assert taxonomy.paths == sorted(taxonomy.paths)
    assert len(taxonomy.l1_labels()) == 26


def test_taxonomy_line_without_separator_names_file_and_line(tmp_path):
    bad = tmp_path / "categories.txt"
    bad.write_text("# header\n# format\n\ngid://shopify/TaxonomyCategory/aa : Apparel\nno separator here\n")
    with pytest.raises(InputError, match=r"categories.txt, line 5: expected '<gid> : <path>'"):
        parse_categories(bad)


def test_taxonomy_splits_on_padded_separator(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("gid://shopify/TaxonomyCategory/aa-1-2        :  Apparel & Accessories > Clothing  \n")
    assert parse_categories(path) == ["Apparel & Accessories > Clothing"]


def test_trim_path_keeps_three_stripped_nodes():
    assert trim_path("A >  B  > C > D > E") == "A > B > C"
    assert trim_path("A") == "A"


def test_parquet_jsonl_and_csv_read_to_the_same_columns(tmp_path):
    shard = write_shard(tmp_path / "shard.parquet", [product(), product(title="Pants", truth=PANTS, potentials=())])
    frame = read_products(shard)
    assert frame["product_id"].to_list() == ["0", "1"]
    assert frame.columns == [
        "product_id", "product_title", "product_description", "ground_truth_category",
        "potential_product_categories", "product_image",
    ]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"split": "train", "row_index": i, "product_title": "t", "product_description": "d",
                              "ground_truth_category": HATS}) for i in (7, 9))
    )
    assert read_products(jsonl)["product_id"].to_list() == ["train-7", "train-9"]
    csv = tmp_path / "p.csv"
    csv.write_text(
        'product_title,product_description,ground_truth_category,potential_product_categories\n'
        f'Hat,A hat,{HATS},"[""{SCARVES}""]"\n'
    )
    frame = read_products(csv)
    assert frame["potential_product_categories"].to_list() == [[SCARVES]]
    assert frame["product_id"].to_list() == ["0"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.parquet", b"PAR1 this is not parquet", r"broken.parquet is not a readable Parquet file"),
        ("cols.jsonl", b'{"product_title": "x", "product_description": "y"}\n', r"cols.jsonl lacks required column\(s\) ground_truth_category"),
        ("bad.jsonl", b'{"product_title": "x"}\n{not json\n', r"bad.jsonl, line 2: not valid JSON"),
        ("products.xlsx", b"", r"unsupported extension '.xlsx'"),
    ],
)
def test_bad_product_files_raise_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_products(path)


def test_cleaning_drops_each_bad_row_under_its_first_reason(tmp_path):
    rows = [
        product(title="  Good hat  ", description=" fine ", potentials=(f" {HATS} ",)),  # kept, stripped
        product(title=" "),  # empty title
        product(description=None),  # empty description
        product(truth=""),  # empty ground truth
        product(potentials=()),  # empty potentials
        product(potentials=(HATS, " ")),  # an empty potential element
        product(image={"bytes": b"", "path": "x.jpg"}),  # empty image bytes
        product(image={"bytes": b"\xff", "path": "  "}),  # empty image path
        product(truth="Apparel & Accessories > Hats"),  # not a taxonomy category
        product(potentials=("Nope > Nothing",)),  # potential not in taxonomy
    ]
    raw = read_products(write_shard(tmp_path / "s.parquet", rows))
    clean, report = clean_products(raw, VALID)
    assert report.rows_in == 10 and report.rows_out == 1
    assert report.dropped == {
        "empty_title": 1,
        "empty_description": 1,
        "empty_ground_truth": 1,
        "empty_potentials": 2,
        "empty_image": 2,
        "ground_truth_not_in_taxonomy": 1,
        "potential_not_in_taxonomy": 1,
    }
    row = clean.row(0, named=True)
    assert row["product_id"] == "0"
    assert (row["product_title"], row["product_description"]) == ("Good hat", "fine")
    assert row["potential_product_categories"] == [HATS]
    assert row["product_image"]["path"] == "Good hat  .jpg"  # the path is stripped too


def test_absent_columns_are_not_required():
    raw = pl.DataFrame(
        {"product_id": ["a", "b"], "product_title": ["Hat", "Hat"], "product_description": ["d", "d"],
         "ground_truth_category": [PANAMA, "Unknown > Path"]}
    )
    clean, report = clean_products(raw, VALID)
    assert clean["product_id"].to_list() == ["a"]
    assert report.dropped == {
        "empty_title": 0, "empty_description": 0, "empty_ground_truth": 0, "ground_truth_not_in_taxonomy": 1
    }


def test_trimming_cuts_to_l3_and_dedupes_potentials_in_order():
    clean = pl.DataFrame(
        {"product_id": ["a"], "product_title": ["t"], "product_description": ["d"], "ground_truth_category": [PANAMA],
         "potential_product_categories": [[PANAMA, SCARVES, HATS]]}
    )
    taxonomy = TrimmedTaxonomy.from_categories(VALID)
    trimmed = trim_products(clean, taxonomy)
    assert trimmed["ground_truth_category"].to_list() == [HATS]
    assert trimmed["potential_product_categories"].to_list() == [[HATS, SCARVES]]
    without = trim_products(clean.drop("potential_product_categories"), taxonomy)
    assert without["potential_product_categories"].to_list() == [[]]
