"""Read a catalogue to classify in fixed-size shards without loading the file: Parquet row batches,
CSV blocks and JSON Lines read line by line. Rows need an id and a title or a description; an optional
`category` column is the merchant's own label of the product (kept beside the model's, null where empty);
ground_truth_category and the rest are not read. A Shopify admin product export (a CSV with Handle, Title
and Body (HTML)) is read as one product per Handle by shopify_export.py, its Product Category as the
category.

`validate_catalogue` checks the whole file in one streaming pass before anything is classified or
written: the declared columns in every format (every JSON Lines record, not only the first), text
that decodes as UTF-8, ids non-empty and unique, a text per row. Each error names the file, the row
(a JSON Lines line; a Shopify export's product: the row of its first row), the value and the fix. Ids are
strings as given; a JSON id that is a whole number is read as its decimal digits, any other non-string id
(1.5, true, null, ...) is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxo_pipeline.classification.shopify_export import ROW, UTF8_FIX, is_shopify_export, read_export, utf8
from taxo_pipeline.dataset.products import CATALOGUE_COLUMNS, FORMATS, json_lines, stable_ids
from taxo_pipeline.errors import InputError

log = logging.getLogger(__name__)

ID_COLUMNS = ("product_id", "row_index", "split")
READ_BATCH = 4096
CATEGORY = "category"  # the merchant's label of a product: optional, null where absent or empty


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int  # its first product's place (0-based): its file row; in a Shopify export, its product number
    # product_id, product_title, product_description (strings, never null), category (string, null where none)
    products: pl.DataFrame

    @property
    def fingerprint(self) -> str:
        """Hash of the shard's rows: a shard whose rows are unchanged is not classified again."""
        digest = hashlib.sha256()
        for *texts, category in self.products.select("product_id", *CATALOGUE_COLUMNS, CATEGORY).iter_rows():
            # a product without a category hashes as its texts alone did before categories were read
            label = b"" if category is None else b"\x1f" + category.encode()
            digest.update("\x1f".join(texts).encode() + label + b"\x1e")
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CatalogueCheck:
    """A catalogue that passed validation: its size and each shard's fingerprint, in order."""

    products: int
    fingerprints: tuple[str, ...]

    @property
    def shards(self) -> int:
        return len(self.fingerprints)


def validate_catalogue(
    path: Path, shard_size: int, fingerprint: Callable[[Shard], str] = lambda shard: shard.fingerprint
) -> CatalogueCheck:
    """Check the whole catalogue in one pass (InputError at the first problem); memory stays flat:
    ids are kept as 8-byte hashes (8 MB per million), and only a repeated hash costs a second pass to
    name the rows that repeat the id. `fingerprint`: each shard's (a run's may add what else decides it)."""
    started, path = time.perf_counter(), Path(path)
    fingerprints: list[str] = []
    hashes: list[np.ndarray] = []
    products = 0
    for shard in read_shards(path, shard_size):
        fingerprints.append(fingerprint(shard))
        hashes.append(shard.products["product_id"].hash(seed=0).to_numpy())
        products += shard.products.height
        if shard.index % 10 == 9:
            log.info("validated %d products of %s", products, path)
    ordered = np.sort(np.concatenate(hashes))
    if (repeated := ordered[1:][ordered[1:] == ordered[:-1]]).size:
        _name_repeat(path, set(repeated.tolist()))  # raises, unless two ids merely share a hash
    log.info("%s: %d products in %d shards validated in %.1fs", path, products, len(fingerprints),
             time.perf_counter() - started)  # fmt: skip
    return CatalogueCheck(products, tuple(fingerprints))


def _name_repeat(path: Path, suspects: set[int]) -> None:
    seen: dict[str, int] = {}
    for frame in _frames(path):
        hit = frame.filter(frame["product_id"].hash(seed=0).is_in(list(suspects)))
        for product_id, row in hit.select("product_id", ROW).iter_rows():
            if product_id in seen:
                unit = _unit(path)
                if is_export(path):  # the Handle's rows are apart: the file was sorted or edited since its export
                    raise InputError(f"products file {path}, row {row}: Handle {product_id!r} again, after other "
                                     f"products' rows (its product starts at row {seen[product_id]}); a product's "
                                     "rows must be consecutive: move them together, or give the other product its "
                                     "own Handle")  # fmt: skip
                raise InputError(f"products file {path}, {unit} {row} repeats product_id {product_id!r} (first at "
                                 f"{unit} {seen[product_id]}); ids must be unique: give each product its own id")  # fmt: skip
            seen[product_id] = row


def read_shards(path: Path, shard_size: int) -> Iterator[Shard]:
    """The catalogue's shards in file order, each row checked as it is read; ids are unique across the
    file only once validate_catalogue passed."""
    pending: list[pl.DataFrame] = []
    rows = index = 0
    for frame in _frames(Path(path)):
        pending.append(frame.drop(ROW))
        while sum(f.height for f in pending) >= shard_size:
            whole = pl.concat(pending)
            yield Shard(index, rows, whole.head(shard_size))
            pending, rows, index = [whole.slice(shard_size)], rows + shard_size, index + 1
    if (rest := pl.concat(pending) if pending else None) is not None and rest.height:
        yield Shard(index, rows, rest)
    elif index == 0:
        raise InputError(f"products file {path} holds no rows")


def check_file(path: Path) -> str:
    """The catalogue's format; an error unless it is a non-empty file of a supported type."""
    if path.is_dir():
        raise InputError(f"products file {path} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"products file {path} does not exist")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"products file {path}: unsupported extension {path.suffix!r} (use .parquet, .jsonl or .csv)")
    if path.stat().st_size == 0:
        raise InputError(f"products file {path} is empty (0 bytes)")
    return fmt


def _unit(path: Path) -> str:
    return "line" if FORMATS.get(path.suffix.lower()) == "jsonl" else "row"


def is_export(path: Path) -> bool:
    """Whether the catalogue is a Shopify product export (False for a file that is missing: check_file says so)."""
    path = Path(path)
    return FORMATS.get(path.suffix.lower()) == "csv" and path.is_file() and is_shopify_export(_csv_header(path), path)


def _frames(path: Path) -> Iterator[pl.DataFrame]:
    """The file's rows in batches: `_row`, product_id, product_title, product_description, category, each
    checked (a Shopify export's: one row per product)."""
    fmt = check_file(path)
    reader = {"parquet": _parquet, "csv": _csv, "jsonl": _jsonl}[fmt]
    if fmt == "csv" and is_shopify_export(header := _csv_header(path), path):
        reader = partial(read_export, header=header)
    offset = 0
    for raw in reader(path):
        yield _clean(raw, path, offset)
        offset += raw.height


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _check_columns(path: Path, names: list[str]) -> list[str]:
    if missing := [c for c in CATALOGUE_COLUMNS if c not in names]:
        raise InputError(
            f"products file {path} lacks required column(s) {', '.join(missing)} (it has: {', '.join(names) or 'none'})"
        )
    return [c for c in (*ID_COLUMNS, *CATALOGUE_COLUMNS, CATEGORY) if c in names]


def _numbered(frame: pl.DataFrame, offset: int) -> pl.DataFrame:
    return frame.with_columns(pl.int_range(offset + 1, offset + 1 + frame.height, eager=True).alias(ROW))


def _parquet(path: Path) -> Iterator[pl.DataFrame]:
    try:
        file = pq.ParquetFile(path)
        columns = _check_columns(path, file.schema_arrow.names)
        for name in (c for c in ("product_id", "row_index") if c in columns):
            kind = file.schema_arrow.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
                raise InputError(f"products file {path}: column {name} holds {kind} values; ids must be strings or "
                                 "whole numbers (read as their digits): store them as strings")  # fmt: skip
        if CATEGORY in columns and not _is_text(kind := file.schema_arrow.field(CATEGORY).type):
            raise InputError(f"products file {path}: column {CATEGORY} holds {kind} values; a category is a text "
                             "(a taxonomy path, or null for none): store it as strings")  # fmt: skip
        rows = 0
        for batch in file.iter_batches(batch_size=READ_BATCH, columns=columns):
            frame = pl.from_arrow(pa.Table.from_batches([batch])).with_columns(pl.col(columns).cast(pl.String))
            yield _numbered(frame, rows)
            rows += frame.height
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"products file {path} is not a readable Parquet file: {exc}") from exc


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"products file {path}, header (line 1): not valid UTF-8 at byte {exc.start} "
                         f"({first[max(exc.start - 20, 0):exc.end + 20]!r}): {UTF8_FIX}") from None  # fmt: skip
    return next(csv.reader([text]), [])


def _csv(path: Path) -> Iterator[pl.DataFrame]:
    header = _csv_header(path)
    columns = _check_columns(path, header)
    # binary first, so that text which is not UTF-8 can be named by its row
    convert = pacsv.ConvertOptions(column_types={c: pa.binary() for c in header}, include_columns=columns)
    rows = 0
    try:
        batches = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                 convert_options=convert)  # fmt: skip
        for batch in batches:
            frame = pl.DataFrame({c: pl.from_arrow(utf8(batch.column(c), path, c, rows)) for c in columns})
            yield _numbered(frame, rows)
            rows += frame.height
    except pa.ArrowInvalid as exc:
        raise InputError(f"products file {path} is not a readable CSV file: {exc}") from exc


def _jsonl(path: Path) -> Iterator[pl.DataFrame]:
    """Every record must carry the text fields and the same id fields as the first (product_id, or none); any
    may carry a category."""
    records: list[dict] = []
    first: tuple[int, list[str]] | None = None
    for number, record in json_lines(path):
        ids = [c for c in ID_COLUMNS if c in record]
        if first is None:
            first, columns = (number, ids), [c for c in _check_columns(path, list(record)) if c != CATEGORY]
        elif ids != first[1]:
            raise InputError(f"products file {path}, line {number} has id field(s) {', '.join(ids) or 'none'} but line "
                             f"{first[0]} has {', '.join(first[1]) or 'none'}: give every record the same id fields "
                             "(a product_id each, or none to number the rows)")  # fmt: skip
        if missing := [c for c in CATALOGUE_COLUMNS if c not in record]:
            raise InputError(f"products file {path}, line {number} lacks {', '.join(missing)}: every record needs "
                             f"{' and '.join(CATALOGUE_COLUMNS)} (one of them may be empty)")  # fmt: skip
        records.append({ROW: number, **{c: _json_value(record[c], path, number, c) for c in columns},
                        CATEGORY: _json_value(record.get(CATEGORY), path, number, CATEGORY)})  # fmt: skip
        if len(records) == READ_BATCH:
            yield pl.DataFrame(records, schema={ROW: pl.Int64, **dict.fromkeys([*columns, CATEGORY], pl.String)})
            records = []
    if records:
        yield pl.DataFrame(records, schema={ROW: pl.Int64, **dict.fromkeys([*columns, CATEGORY], pl.String)})


def _json_value(value, path: Path, line: int, name: str) -> str | None:
    """Texts and the category are strings (null: empty); ids are strings, or whole numbers read as their decimal
    digits."""
    if isinstance(value, str) or (value is None and name in (*CATALOGUE_COLUMNS, CATEGORY)):
        return value
    if name in ("product_id", "row_index") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    what = "strings or whole numbers" if name in ("product_id", "row_index") else "strings (or null)"
    raise InputError(f"products file {path}, line {line}: {name} is {json.dumps(value)}; {name} values must be {what}: "
                     "write it as a JSON string")  # fmt: skip


def _clean(raw: pl.DataFrame, path: Path, offset: int) -> pl.DataFrame:
    """`_row`, ids, texts and categories of rows `offset`.. of the file; an empty id or a row with neither text is
    an error."""
    category = raw[CATEGORY] if CATEGORY in raw.columns else pl.Series(CATEGORY, [None] * raw.height, pl.String)
    frame = pl.DataFrame([raw[ROW], stable_ids(raw, offset).alias("product_id"),
                          *(raw[c].cast(pl.String).fill_null("") for c in CATALOGUE_COLUMNS),
                          category.cast(pl.String).str.strip_chars().replace("", None).alias(CATEGORY)])  # fmt: skip
    blank = frame["product_id"].is_null() | (frame["product_id"].str.strip_chars() == "")
    if blank.any():
        row, value = frame.filter(blank).select(ROW, "product_id").row(0)
        raise InputError(f"products file {path}, {_unit(path)} {row}: empty product_id ({value!r}); every product "
                         "needs an id: fill it in, or drop the product_id column to number the rows")  # fmt: skip
    empty = (frame["product_title"].str.strip_chars() == "") & (frame["product_description"].str.strip_chars() == "")
    if empty.any():
        row = frame.filter(empty)[ROW][0]
        raise InputError(f"products file {path}, {_unit(path)} {row}: product_title and product_description are both "
                         "empty; give the product a title or a description, or remove it")  # fmt: skip
    return frame
