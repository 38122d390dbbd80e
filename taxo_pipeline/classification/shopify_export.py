"""Read a Shopify admin product export (Products > Export, `products_export_1.csv`) as a catalogue to classify,
one row per product however many variant and image rows it has.

The export is recognised by its header (Handle, Title, Body (HTML)). A product's rows are consecutive and share
its Handle; only its first row carries the Title, the `Body (HTML)` and, in newer exports, `Product Category`:
the merchant's own category (a Shopify taxonomy path, `Uncategorized`, or empty). Each product becomes one row:
`_row` (the data row of its first row, 1-based, the header not counted), product_id (the Handle, stripped),
product_title, product_description (the body as plain text, then the EXTRA_FIELDS), category (null where the
merchant set none), vendor, product_type and tags. The file is read in blocks and a block's last product waits
for the next block, where it may go on, so memory stays flat however many products the export holds."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

from taxo_pipeline.dataset.products import CATALOGUE_COLUMNS
from taxo_pipeline.errors import InputError

HANDLE, TITLE, BODY = "Handle", "Title", "Body (HTML)"
CATEGORY, VENDOR, TYPE, TAGS = "Product Category", "Vendor", "Type", "Tags"
# the export's columns that are read, and their names in the frames read_export yields
COLUMNS = {HANDLE: "product_id", TITLE: "product_title", BODY: "body", CATEGORY: "category", VENDOR: "vendor",
           TYPE: "product_type", TAGS: "tags"}  # fmt: skip
EXTRAS = {TYPE: "product_type", VENDOR: "vendor", TAGS: "tags"}
# Export columns (of EXTRAS) put before each description, in this order: the text encoders read 256 tokens, so a
# long body would push them out. Type and Vendor raised zero-shot exact L3 accuracy on both halves of the merchant
# shops (split by a hash of the shop: 0.239 -> 0.271 and 0.286 -> 0.320, 1,141 products; bench/merchant.py rows);
# Tags are not in those rows, so they were never measured and stay out.
EXTRA_FIELDS: tuple[str, ...] = (TYPE, VENDOR)
READ_BLOCK = 16 << 20  # bytes read at a time; a row must fit in one (bodies can carry inline images)
ROW = "_row"  # where a row is in the file, for errors: its data row (1-based), or a JSON Lines line number
UTF8_FIX = "save the file as UTF-8"
OUTPUT = (ROW, "product_id", "product_title", "product_description", "category", *EXTRAS.values())

# a body that is only a URL or a file name is a description like any other
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)


def is_shopify_export(header: list[str], path: Path | str = "") -> bool:
    """Whether a CSV with this header is a Shopify product export; an error for one that lost its Handle (a CSV
    that also has the plain catalogue's columns is a plain catalogue)."""
    names = set(header)
    if TITLE not in names or BODY not in names:
        return False
    if HANDLE not in names and not names.issuperset(CATALOGUE_COLUMNS):
        raise InputError(f"products file {path}, header (line 1): a Shopify product export (it has the {TITLE} and "
                         f"{BODY} columns) without its {HANDLE} column, which names each product: export the "
                         f"products again from the Shopify admin, or put the {HANDLE} column back")  # fmt: skip
    return HANDLE in names


def html_text(html: str | None) -> str:
    """`Body (HTML)` as plain text: tags dropped (a space where each was), entities decoded, whitespace collapsed."""
    if not html:
        return ""
    if "<" not in html and "&" not in html:  # nothing for a parser to do
        return " ".join(html.split())
    return " ".join(BeautifulSoup(html, "lxml").get_text(" ").split())


def description(body: str, extras: Mapping[str, str | None], fields: tuple[str, ...] | None = None) -> str:
    """A product's description: each of `fields` (export columns of EXTRAS; default EXTRA_FIELDS) that `extras`
    fills, then its body text, joined by `. ` (as bench/merchant.py's --fields measured them)."""
    fields = EXTRA_FIELDS if fields is None else fields
    head = ". ".join(value.rstrip(".") for name in fields if (value := " ".join((extras.get(name) or "").split())))
    return f"{head}. {body}" if head and body else head or body


def read_export(path: Path, header: list[str]) -> Iterator[pl.DataFrame]:
    """The export's products, block by block, each whole: the OUTPUT columns, one row per Handle."""
    columns = [c for c in COLUMNS if c in header]
    # binary first, so that text which is not UTF-8 can be named by its row and column
    convert = pacsv.ConvertOptions(column_types={c: pa.binary() for c in header}, include_columns=columns)
    carried: pl.DataFrame | None = None  # the last product's rows so far: the next block may hold more of them
    rows = 0
    try:
        blocks = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=READ_BLOCK),
                                parse_options=pacsv.ParseOptions(newlines_in_values=True), convert_options=convert)  # fmt: skip
        for batch in blocks:
            frame = _block(batch, path, rows)
            rows += batch.num_rows
            frame = _grouped(frame if carried is None else pl.concat([carried, frame]))
            last = frame["_product"] == frame["_product"].max()
            carried = frame.filter(last).drop("_product")
            if (~last).any():
                yield _products(frame.filter(~last), path)
    except pa.ArrowInvalid as exc:
        hint = f" (a quote left open, or a row over {READ_BLOCK / 2**20:g} MiB)" if "straddl" in str(exc) else ""
        raise InputError(f"products file {path} is not a readable CSV file{hint}: {exc}") from exc
    if carried is not None and carried.height:
        yield _products(_grouped(carried), path)


def _block(batch: pa.RecordBatch, path: Path, offset: int) -> pl.DataFrame:
    """A block's rows as text, numbered by their data row; an empty Handle is an error."""
    read = {COLUMNS[c]: pl.from_arrow(utf8(batch.column(c), path, c, offset)) for c in batch.schema.names}
    frame = pl.DataFrame(
        [pl.Series(ROW, range(offset + 1, offset + 1 + batch.num_rows), pl.Int64),
         *(pl.Series(name, read[name] if name in read else [None] * batch.num_rows, pl.String)
           for name in COLUMNS.values())]
    ).with_columns(pl.col("product_id").str.strip_chars())  # fmt: skip
    blank = frame["product_id"].is_null() | (frame["product_id"] == "")
    if blank.any():
        raise InputError(f"products file {path}, row {frame.filter(blank)[ROW][0]}: empty {HANDLE}; every row of a "
                         f"Shopify export names its product by its {HANDLE}: fill it in (the same on each of a "
                         "product's rows), or remove the row")  # fmt: skip
    return frame


def _grouped(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `_product` numbering their products: a product is a run of rows with one Handle."""
    starts = pl.col("product_id").ne(pl.col("product_id").shift(1)).fill_null(True)
    return rows.with_columns(starts.cum_sum().alias("_product"))


def _products(rows: pl.DataFrame, path: Path) -> pl.DataFrame:
    """One row per product of `rows` (whole products, in order); a product with no Title is an error."""
    products = rows.group_by("_product", maintain_order=True).agg(
        pl.col(ROW).first(), pl.col("product_id").first(), pl.col("body").filter(pl.col("body").str.strip_chars() != "").first(),
        *(_first(c) for c in ("product_title", "category", *EXTRAS.values())),
    )  # fmt: skip
    if (untitled := products.filter(pl.col("product_title").is_null())).height:
        row, handle = untitled.select(ROW, "product_id").row(0)
        raise InputError(f"products file {path}, row {row}: product {handle!r} ({HANDLE}) has no {TITLE} on any of "
                         f"its rows (from row {row}): give it a {TITLE} on its first row, or remove its rows; where "
                         f"its {HANDLE} also comes earlier, the file was sorted since its export: keep each product's "
                         "rows together")  # fmt: skip
    texts = [description(html_text(body), {field: extras[name] for field, name in EXTRAS.items()})
             for body, extras in zip(products["body"], products.select(EXTRAS.values()).iter_rows(named=True))]  # fmt: skip
    return products.with_columns(pl.Series("product_description", texts, pl.String)).select(OUTPUT)


def _first(name: str) -> pl.Expr:
    """The first non-blank value of a product's rows in a column, stripped; null where none."""
    value = pl.col(name).str.strip_chars()
    return value.filter(value != "").first()


def utf8(column: pa.Array, path: Path, name: str, offset: int) -> pa.Array:
    """A binary column read from a file as text; bytes that are not UTF-8 are named by their data row
    (`offset`: the rows before the column's first) and column."""
    try:
        return pc.cast(column, pa.string())
    except pa.ArrowInvalid:
        for i, value in enumerate(column.to_pylist()):
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"products file {path}, row {offset + i + 1}: {name} is not valid UTF-8 at byte "
                                 f"{exc.start} ({value[max(exc.start - 20, 0):exc.end + 20]!r}): {UTF8_FIX}") from None  # fmt: skip
        raise
