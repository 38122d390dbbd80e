"""The Shopify import file that writes classified categories back: checked against the real merchant exports
read with a plain csv reader, a tiny hand-written export, and the errors for a handle the export lacks,
a missing column and a byte that is not UTF-8."""

import csv
import io

import pytest

from taxo_pipeline.classification import shopify_import
from taxo_pipeline.classification.shopify_import import write_shopify_import
from taxo_pipeline.errors import InputError
from taxo_pipeline_tests.factories import SHARED_DATA

RAW = SHARED_DATA / "shopify-merchant-exports" / "raw"
# the four real exports carry every option column, `Linked To` included
HEADER = ["Handle", "Title", "Product Category",
          *(f"Option{n} {p}" for n in (1, 2, 3) for p in ("Name", "Value", "Linked To"))]  # fmt: skip
POTS = "Home & Garden > Lawn & Garden > Gardening > Pots & Planters"


def read_csv(path):
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def export_rows(path):
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def options(row):
    return [row[name] for name in HEADER[3:]]


def test_garden_solutions_variant_rows(tmp_path):
    export = RAW / "garden-solutions.csv"
    source = export_rows(export)
    handles = ["premium-bolivia-trough-plant-pot", "premium-windsor-plant-pot"]
    out = tmp_path / "import.csv"
    assert write_shopify_import(export, {handles[1]: POTS, handles[0]: "Home & Garden"}, out) == 2

    written = read_csv(out)
    assert written[0] == HEADER
    assert {row[0] for row in written[1:]} == set(handles)  # no other product is touched
    for handle, category in ((handles[0], "Home & Garden"), (handles[1], POTS)):
        theirs = [row for row in source if row["Handle"] == handle]
        ours = [row for row in written[1:] if row[0] == handle]
        assert len(ours) == len(theirs) > 20  # every row of these products is a variant (27 and 63)
        assert ours[0][:3] == [handle, theirs[0]["Title"], category]
        assert ours[0][3:] == options(theirs[0])
        assert ours[0][3:5] == ["Size", theirs[0]["Option1 Value"]] and ours[0][6] == "Colour"
        assert all(row[1:3] == ["", ""] for row in ours[1:])
        assert [row[3:] for row in ours] == [options(row) for row in theirs]
    assert written[1][:2] == ["premium-bolivia-trough-plant-pot", "Premium Bolivia Trough Plant Pot"]
    assert out.read_bytes().count(b"\r") == 0


@pytest.mark.parametrize("name", ["ayonne.csv", "baby-heaven.csv", "garden-solutions.csv", "las-lira.csv"])
def test_every_product_of_a_real_export(tmp_path, name):
    """Each product's first row and its variant rows, in file order; image-only rows dropped."""
    source = export_rows(RAW / name)
    categories = {row["Handle"]: f"Category of {row['Handle']}" for row in source}
    expected, seen = [HEADER], set()
    for row in source:
        if row["Handle"] not in seen:
            seen.add(row["Handle"])
            expected.append([row["Handle"], row["Title"], categories[row["Handle"]], *options(row)])
        elif any(options(row)):
            expected.append([row["Handle"], "", "", *options(row)])
    assert len(expected) - 1 < len(source) or name == "garden-solutions.csv"  # the others have image rows
    out = tmp_path / "import.csv"
    assert write_shopify_import(RAW / name, categories, out) == len(categories)
    assert read_csv(out) == expected


TINY = (
    "\ufeffHandle,Title,Body (HTML),Product Category,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Image Src\r\n"
    'tee,Plain tee,"<p>Soft,\r\nwarm</p>",Apparel & Accessories,Size,S,Colour,Red,https://x/1.jpg\r\n'
    "tee,,,,,M,,Red,https://x/2.jpg\r\n"
    "tee,,,,,,,,https://x/3.jpg\r\n"
    "mug,Old mug,,Home & Garden,Title,Default Title,,,\r\n"
    'sign,"The ""Best"" sign, 2 m",<p>NA</p>,,Title,Default Title,,,https://x/4.jpg\r\n'
    "sign,,,,,,,,https://x/5.jpg\r\n"
)


def test_tiny_export_by_hand(tmp_path):
    export = tmp_path / "products_export_1.csv"
    export.write_bytes(TINY.encode("utf-8"))
    out = tmp_path / "import.csv"
    categories = {"sign": "Home & Garden > Decor > Signs", "tee": "Apparel & Accessories > Clothing > Shirts & Tops"}
    assert write_shopify_import(export, categories, out) == 2
    assert out.read_text(encoding="utf-8") == (
        "Handle,Title,Product Category,Option1 Name,Option1 Value,Option2 Name,Option2 Value\n"
        "tee,Plain tee,Apparel & Accessories > Clothing > Shirts & Tops,Size,S,Colour,Red\n"
        "tee,,,,M,,Red\n"
        'sign,"The ""Best"" sign, 2 m",Home & Garden > Decor > Signs,Title,Default Title,,\n'
    )
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[3][1] == 'The "Best" sign, 2 m'


def test_small_blocks_keep_products_across_block_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(shopify_import, "BLOCK_BYTES", 200)  # rows of one product split over blocks
    export = tmp_path / "products_export_1.csv"
    export.write_bytes(TINY.encode("utf-8"))
    out = tmp_path / "import.csv"
    assert write_shopify_import(export, {"tee": "T", "sign": "S"}, out) == 2
    assert [row[:3] for row in read_csv(out)[1:]] == [
        ["tee", "Plain tee", "T"],
        ["tee", "", ""],
        ["sign", 'The "Best" sign, 2 m', "S"],
    ]


def test_handle_missing_from_the_export_is_named(tmp_path):
    export = tmp_path / "products_export_1.csv"
    export.write_bytes(TINY.encode("utf-8"))
    out = tmp_path / "import.csv"
    with pytest.raises(
        InputError, match=rf"1 product handle\(s\) to update are not in the product export {export}: 'cup';"
    ):
        write_shopify_import(export, {"tee": "T", "cup": "C"}, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [export]


def test_export_without_title_column(tmp_path):
    export = tmp_path / "products.csv"
    export.write_text("Handle,Product Category\ntee,\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^product export {export} has no 'Title' column"):
        write_shopify_import(export, {"tee": "T"}, tmp_path / "import.csv")


def test_bytes_that_are_not_utf8_name_the_row(tmp_path):
    export = tmp_path / "products.csv"
    export.write_bytes(
        b"Handle,Title,Option1 Name,Option1 Value\ntee,Tee,Size,S\ntee,,,M\n" + b"mug,Caf\xe9 mug,Title,Default Title\n"
    )
    with pytest.raises(
        InputError, match=rf"^products file {export}, row 3: Title is not valid UTF-8"  # the data row, as the reader says
    ):
        write_shopify_import(export, {"tee": "T"}, tmp_path / "import.csv")


def test_ragged_or_empty_export(tmp_path):
    export = tmp_path / "products.csv"
    export.write_text("Handle,Title,Option1 Value\ntee,Tee,S\nmug,Mug\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=rf"^product export {export} is not a readable CSV: .*Expected 3 columns, got 2"
    ):
        write_shopify_import(export, {"tee": "T"}, tmp_path / "import.csv")
    export.write_bytes(b"")
    with pytest.raises(InputError, match=rf"^product export {export} is empty"):
        write_shopify_import(export, {"tee": "T"}, tmp_path / "import.csv")
    assert not (tmp_path / "import.csv").exists()
