"""Write back classified categories as a file Shopify's product import takes ("Overwrite products with
matching handles"), built from the merchant's own product export.

Shopify updates a product from `Handle` and `Title`; every column left out keeps its value, except that a
product updated without `Option1 Name`/`Option1 Value` has its variants replaced by one default variant.
So the file carries each product's option columns and its variant rows, and nothing else: image-only rows
are left out (images are kept), and products not being updated are not in the file at all.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from taxo_pipeline.classification.shopify_export import utf8
from taxo_pipeline.errors import InputError
from taxo_pipeline.files import write_atomic

REQUIRED_COLUMNS = ("Handle", "Title")
CATEGORY_COLUMN = "Product Category"
# `Linked To` (an option tied to a category metafield) travels with its option, so the import keeps the link.
OPTION_COLUMNS = tuple(f"Option{n} {part}" for n in (1, 2, 3) for part in ("Name", "Value", "Linked To"))
BLOCK_BYTES = 1 << 20  # the export is read this much at a time: memory stays flat however many products

# (handle, title, option values) of one export row
Row = tuple[str, str, list[str]]


def write_shopify_import(export: Path, categories: Mapping[str, str], output: Path) -> int:
    """Write `output`: for each handle in `categories` (handle -> Shopify category path), its first export
    row with the new `Product Category`, then its further rows that carry an option value. Returns the
    number of products written; a handle the export lacks is an error and `output` is left untouched."""
    export = Path(export)
    header = _header(export)
    if not header:
        raise InputError(f"product export {export} is empty: pass the CSV that Shopify's admin exports")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InputError(
            f"product export {export} has no {' or '.join(repr(m) for m in missing)} column: pass the CSV "
            "that Shopify's admin exports (Products > Export), which Shopify needs to match products"
        )
    options = [name for name in OPTION_COLUMNS if name in header]
    wanted = pa.array(list(categories), pa.string())
    written: set[str] = set()

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow([*REQUIRED_COLUMNS, CATEGORY_COLUMN, *options])
            for handle, title, values in _rows(export, options, wanted):
                if handle not in written:
                    written.add(handle)
                    writer.writerow([handle, title, categories[handle], *values])
                elif any(values):  # a variant row; a row with only an image is left out
                    writer.writerow([handle, "", "", *values])
        absent = [handle for handle in categories if handle not in written]
        if absent:
            raise InputError(
                f"{len(absent)} product handle(s) to update are not in the product export {export}: "
                f"{', '.join(repr(h) for h in absent[:5])}{' ...' if len(absent) > 5 else ''}; "
                "write back only products classified from this export"
            )

    write_atomic(Path(output), write)
    return len(written)


def _header(export: Path) -> list[str]:
    try:
        with export.open("rb") as handle:  # decoded line by line: a bad byte further on is reported with its row
            lines = (line.decode("utf-8-sig" if number == 0 else "utf-8") for number, line in enumerate(handle))
            return next(csv.reader(lines), [])
    except FileNotFoundError as exc:
        raise InputError(f"product export {export} does not exist: pass the path of the exported CSV") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"product export {export}: the header row is not UTF-8 text: {exc}") from exc


def _rows(export: Path, options: list[str], wanted: pa.Array) -> Iterator[Row]:
    """The rows whose handle (whitespace aside, as the export reader takes it) is in `wanted`, in file order;
    read in blocks as bytes and checked to be UTF-8 here, so a bad byte is reported with its row."""
    columns = [*REQUIRED_COLUMNS, *options]
    try:
        reader = pacsv.open_csv(
            export,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),  # Body (HTML) spans lines
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types={name: pa.binary() for name in columns}
            ),
        )
        rows = 0  # data rows before the block, as the export reader counts them
        for batch in reader:
            texts = [utf8(batch.column(name), export, name, rows) for name in columns]
            texts[0] = pc.utf8_trim_whitespace(texts[0])
            picked = pc.indices_nonzero(pc.is_in(texts[0], value_set=wanted))
            if len(picked):
                values = [column.take(picked).to_pylist() for column in texts]
                for handle, title, *option_values in zip(*values):
                    yield handle, title or "", [v or "" for v in option_values]
            rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise InputError(f"product export {export} is not a readable CSV: {exc}") from exc
