"""A Shopify admin product export read as a catalogue: one product per Handle, its body as plain text, the
merchant's Product Category kept as its category; the four real exports in ../shared/data, and small
synthetic ones for the errors. Plain catalogues with a category column. No SIE server."""

import hashlib
import json
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxo_pipeline.classification import shopify_export
from taxo_pipeline.classification.product_catalogue import is_export, read_shards, validate_catalogue
from taxo_pipeline.classification.shopify_export import description, html_text, is_shopify_export, read_export
from taxo_pipeline.errors import InputError
from taxo_pipeline_tests.factories import SHARED_DATA

EXPORTS = SHARED_DATA / "shopify-merchant-exports" / "raw"
HEADER = "Handle,Title,Body (HTML),Vendor,Product Category,Type,Tags,Variant SKU\n"
NAMES = HEADER.strip().split(",")
HATS = "Apparel & Accessories > Clothing Accessories > Hats"
TAG = re.compile(r"<[a-zA-Z/!][^>]*>")  # "<50 dB" is text, "<p>" a tag
ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


def _products(path, shard_size=50) -> pl.DataFrame:
    return pl.concat([shard.products for shard in read_shards(path, shard_size)])


def _write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --- the real exports -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "products", "labelled", "uncategorized"),
    [("ayonne", 133, 133, 3), ("baby-heaven", 99, 99, 5), ("garden-solutions", 70, 70, 0), ("las-lira", 143, 116, 33)],
)
def test_a_real_export_reads_one_row_per_product_with_the_merchants_label(name, products, labelled, uncategorized):
    path = EXPORTS / f"{name}.csv"
    raw = pl.read_csv(path, infer_schema=False)
    assert raw.height > products  # variant and image rows
    check = validate_catalogue(path, 50)
    frame = _products(path)
    assert check.products == frame.height == products
    assert frame.columns == ["product_id", "product_title", "product_description", "category"]
    assert frame["product_id"].to_list() == raw["Handle"].unique(maintain_order=True).to_list()
    assert frame["product_title"].str.strip_chars().ne("").all()
    assert frame["category"].count() == labelled  # las-lira: 27 products without a Product Category
    assert (frame["category"] == "Uncategorized").sum() == uncategorized  # a raw value, kept as given
    texts = frame["product_description"].to_list()
    assert not [t for t in texts if TAG.search(t) or ENTITY.search(t)]
    assert all(t == " ".join(t.split()) for t in texts)
    assert sum(bool(t) for t in texts) > products // 2


def test_a_product_of_many_rows_is_one_with_its_first_rows_texts(tmp_path):
    path = _write(tmp_path / "products_export_1.csv", "\ufeff" + HEADER +  # Excel's byte order mark
                  'straw-hat,Straw Hat,"<h2>Straw&nbsp;hat</h2><p>Woven &amp; light,<br>with a <b>wide</b> brim.</p>\n'
                  '<ul><li>Size M</li><li>Size L</li></ul>",Acme,' + HATS + ",Hats,\"summer, straw\",SH-M\n"
                  "straw-hat,,,,,,,SH-L\n"
                  "straw-hat,,,,,,,\n"
                  " wool-cap ,Wool Cap,Warm &lt;3,Acme,,Caps,,WC-1\n"
                  "wool-cap,,,,,,,WC-2\n"
                  "plain-scarf,Plain Scarf,,,Uncategorized,,,\n")  # fmt: skip
    frame = _products(path, 2)
    assert frame.rows() == [
        ("straw-hat", "Straw Hat", "Hats. Acme. Straw hat Woven & light, with a wide brim. Size M Size L", HATS),
        ("wool-cap", "Wool Cap", "Caps. Acme. Warm <3", None),  # Type, then Vendor, lead (EXTRA_FIELDS)
        ("plain-scarf", "Plain Scarf", "", "Uncategorized"),
    ]
    # each product is named by the data row of its first row (the header not counted)
    assert pl.concat(read_export(path, NAMES))["_row"].to_list() == [1, 4, 6]


def test_the_description_leads_with_the_extra_fields(tmp_path, monkeypatch):
    assert html_text("<p>a</p><p>b</p>") == "a b"
    assert html_text("  Plain\u00a0text\n ") == "Plain text"
    assert html_text(None) == html_text("") == ""
    assert html_text("<style>p {}</style><p>a</p><!-- draft --><script>x()</script><p>caf&eacute;</p>") == "a café"
    extras = {"Type": "Hats", "Vendor": " Acme ", "Tags": ""}
    assert description("A hat.", extras) == "Hats. Acme. A hat."  # EXTRA_FIELDS: Type, then Vendor
    assert description("A hat.", extras, ()) == "A hat."
    assert description("A hat.", {"Type": "Hats.", "Vendor": None}) == "Hats. A hat."  # an empty one is left out
    assert description("", extras, ("Vendor",)) == "Acme"
    path = _write(tmp_path / "e.csv", HEADER + 'hat,Hat,<p>Straw</p>,Acme,,Hats,"a, b",\n')
    monkeypatch.setattr(shopify_export, "EXTRA_FIELDS", ("Type", "Tags"))
    assert _products(path)["product_description"].to_list() == ["Hats. a, b. Straw"]
    (row,) = pl.concat(read_export(path, NAMES)).select("vendor", "product_type", "tags").rows()
    assert row == ("Acme", "Hats", "a, b")


def test_a_product_across_read_blocks_stays_whole(tmp_path, monkeypatch):
    lines = [HEADER]
    for i in range(40):
        lines.append(f"p{i},Product {i},<p>Body {i}</p>,V,{HATS if i % 2 else ''},T,,S{i}-0\n")
        lines += [f"p{i},,,,,,,S{i}-{v}\n" for v in range(1, 1 + (30 if i == 7 else 2))]  # p7: 31 rows
    path = _write(tmp_path / "blocks.csv", "".join(lines))
    monkeypatch.setattr(shopify_export, "READ_BLOCK", 256)
    assert len(list(read_export(path, NAMES))) > 10  # many blocks, a frame of products each
    frame = _products(path, 7)
    assert frame["product_id"].to_list() == [f"p{i}" for i in range(40)]
    assert frame["product_title"].to_list() == [f"Product {i}" for i in range(40)]
    assert frame["product_description"].to_list() == [f"T. V. Body {i}" for i in range(40)]
    assert frame["category"].to_list() == [HATS if i % 2 else None for i in range(40)]
    rows = pl.concat(read_export(path, NAMES))["_row"].to_list()
    assert rows == [1 + 3 * i + (28 if i > 7 else 0) for i in range(40)]


# --- bad exports ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "Title,Body (HTML),Vendor\nHat,<p>Straw</p>,Acme\n",
            "header (line 1): a Shopify product export (it has the Title and Body (HTML) columns) without its Handle column",
        ),
        (
            HEADER + "hat,Hat,<p>Straw</p>,,,,,\ncap,,<p>Wool</p>,,,,,\ncap,,,,,,,\n",
            "row 2: product 'cap' (Handle) has no Title on any of its rows (from row 2): give it a Title on its first row",
        ),
        (
            HEADER.encode() + b"hat,Hat,,,,,,\ncap,Cap,<p>Caf\xe9 cap</p>,,,,,\n",
            r"row 2: Body (HTML) is not valid UTF-8 at byte 6 (b'<p>Caf\xe9 cap</p>'): save the file as UTF-8",
        ),
        (HEADER + "hat,Hat,,,,,,\nhat,,,,,,,\n ,,,,,,,S\n", "row 3: empty Handle; every row of a Shopify export names"),
        (HEADER + 'hat,Hat,"<p>open quote,,,,,,\n', "is not a readable CSV file"),
    ],
    ids=["no-handle", "no-title", "not-utf8", "empty-handle", "open-quote"],
)
def test_a_bad_export_is_named_by_file_and_row(tmp_path, content, problem):
    path = _write(tmp_path / "products_export_1.csv", content)
    with pytest.raises(InputError) as caught:
        validate_catalogue(path, 10)
    assert str(caught.value).startswith(f"products file {path}")
    assert problem in str(caught.value)


def test_a_handle_whose_rows_are_apart_is_named(tmp_path):
    # two products given one Handle: the ids repeat
    path = _write(tmp_path / "two.csv", HEADER + "hat,Hat,,,,,,\nhat,,,,,,,\ncap,Cap,,,,,,\nhat,Sun hat,,,,,,\n")
    with pytest.raises(InputError) as caught:
        validate_catalogue(path, 10)
    assert str(caught.value) == (
        f"products file {path}, row 4: Handle 'hat' again, after other products' rows (its product starts at row 1); "
        "a product's rows must be consecutive: move them together, or give the other product its own Handle"
    )
    # a sorted export: the product's later rows, apart from its first, have no Title
    path = _write(tmp_path / "sorted.csv", HEADER + "hat,Hat,,,,,,\ncap,Cap,,,,,,\nhat,,,,,,,\n")
    with pytest.raises(InputError, match=r"row 3: product 'hat' \(Handle\) has no Title .* the file was sorted since "
                                         r"its export: keep each product's rows together"):  # fmt: skip
        validate_catalogue(path, 10)


def test_a_csv_with_title_and_body_columns_besides_the_catalogues_is_a_plain_catalogue(tmp_path):
    path = _write(tmp_path / "plain.csv", "product_title,product_description,Title,Body (HTML)\nHat,<p>Straw</p>,x,y\n")
    assert not is_shopify_export(["product_title", "product_description", "Title", "Body (HTML)"], path)
    assert not is_export(path) and not is_export(tmp_path / "missing.csv") and is_export(EXPORTS / "ayonne.csv")
    assert _products(path).rows() == [("0", "Hat", "<p>Straw</p>", None)]


# --- plain catalogues with a category ---------------------------------------------------------------------------


def test_a_plain_catalogue_keeps_its_category_column(tmp_path):
    rows = [("a", "Hat", "Straw", f" {HATS} "), ("b", "Cap", "", ""), ("c", "Scarf", "Silk", "Uncategorized")]
    expected = [("a", "Hat", "Straw", HATS), ("b", "Cap", "", None), ("c", "Scarf", "Silk", "Uncategorized")]
    csv = tmp_path / "c.csv"
    pl.DataFrame(
        rows, schema=["product_id", "product_title", "product_description", "category"], orient="row"
    ).write_csv(csv)
    assert _products(csv).rows() == expected
    jsonl = tmp_path / "c.jsonl"
    records = [{"product_id": "a", "product_title": "Hat", "product_description": "Straw", "category": HATS},
               {"product_id": "b", "product_title": "Cap", "product_description": ""},  # no category: null
               {"product_id": "c", "product_title": "Scarf", "product_description": "Silk", "category": "Uncategorized"}]  # fmt: skip
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert _products(jsonl).rows() == expected
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(["product_id", "product_title",
                                                                           "product_description", "category"])}), parquet)  # fmt: skip
    assert _products(parquet).rows() == expected
    jsonl.write_text(json.dumps({**records[0], "category": 5}) + "\n")
    with pytest.raises(InputError, match=r"line 1: category is 5; category values must be strings \(or null\)"):
        _products(jsonl)
    pq.write_table(pa.table({"product_title": ["Hat"], "product_description": [""], "category": [5]}), parquet)
    with pytest.raises(InputError, match=r"column category holds int64 values; a category is a text"):
        _products(parquet)


def test_a_shard_fingerprint_takes_the_category_and_is_unchanged_without_one(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"product_id": "a", "product_title": "Hat", "product_description": "Straw"}) + "\n")
    (shard,) = read_shards(path, 10)
    assert shard.fingerprint == hashlib.sha256(b"a\x1fHat\x1fStraw\x1e").hexdigest()[:16]  # as before categories
    path.write_text(json.dumps({"product_id": "a", "product_title": "Hat", "product_description": "Straw",
                                "category": HATS}) + "\n")  # fmt: skip
    (labelled,) = read_shards(path, 10)
    assert labelled.fingerprint == hashlib.sha256(f"a\x1fHat\x1fStraw\x1f{HATS}\x1e".encode()).hexdigest()[:16]
