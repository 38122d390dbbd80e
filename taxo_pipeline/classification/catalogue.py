"""Read a catalogue to classify in fixed-size shards without loading the file: Parquet row batches,
CSV blocks and JSON Lines read line by line. Rows need an id (the file's, as read_products gives it)
and a title or a description; ground_truth_category and the rest are not read."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxo_pipeline.dataset.products import CATALOGUE_COLUMNS, FORMATS, json_records, stable_ids
from taxo_pipeline.errors import InputError

ID_COLUMNS = ("product_id", "row_index", "split")
READ_BATCH = 4096


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int  # the file row of its first product (0-based)
    products: pl.DataFrame  # product_id, product_title, product_description (strings, never null)

    @property
    def fingerprint(self) -> str:
        """Hash of the shard's rows: a shard whose rows are unchanged is not classified again."""
        digest = hashlib.sha256()
        for row in self.products.iter_rows():
            digest.update("\x1f".join(row).encode() + b"\x1e")
        return digest.hexdigest()[:16]


def read_shards(path: Path, shard_size: int) -> Iterator[Shard]:
    """The catalogue's shards in file order; ids must be unique across the whole file."""
    path = Path(path)
    fmt = _format(path)
    seen: set[str] = set()
    pending: list[pl.DataFrame] = []
    rows = index = 0
    for raw in {"parquet": _parquet, "csv": _csv, "jsonl": _jsonl}[fmt](path):
        pending.append(_clean(raw, path, rows + sum(f.height for f in pending), seen))
        while sum(f.height for f in pending) >= shard_size:
            whole = pl.concat(pending)
            yield Shard(index, rows, whole.head(shard_size))
            pending, rows, index = [whole.slice(shard_size)], rows + shard_size, index + 1
    if (rest := pl.concat(pending) if pending else None) is not None and rest.height:
        yield Shard(index, rows, rest)
    elif index == 0:
        raise InputError(f"products file {path} holds no rows")


def _format(path: Path) -> str:
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


def _check_columns(path: Path, names: list[str]) -> list[str]:
    if missing := [c for c in CATALOGUE_COLUMNS if c not in names]:
        raise InputError(
            f"products file {path} lacks required column(s) {', '.join(missing)} (it has: {', '.join(names) or 'none'})"
        )
    return [c for c in (*ID_COLUMNS, *CATALOGUE_COLUMNS) if c in names]


def _parquet(path: Path) -> Iterator[pl.DataFrame]:
    try:
        file = pq.ParquetFile(path)
        columns = _check_columns(path, file.schema_arrow.names)
        for batch in file.iter_batches(batch_size=READ_BATCH, columns=columns):
            yield pl.from_arrow(pa.Table.from_batches([batch]))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"products file {path} is not a readable Parquet file: {exc}") from exc


def _csv(path: Path) -> Iterator[pl.DataFrame]:
    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    columns = _check_columns(path, header)
    options = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, include_columns=columns)
    try:
        for batch in pacsv.open_csv(path, convert_options=options):
            yield pl.from_arrow(pa.Table.from_batches([batch]))
    except pa.ArrowInvalid as exc:
        raise InputError(f"products file {path} is not a readable CSV file: {exc}") from exc


def _jsonl(path: Path) -> Iterator[pl.DataFrame]:
    records: list[dict] = []
    columns: list[str] | None = None
    for record in json_records(path):
        columns = columns or _check_columns(path, list(record))
        records.append({c: None if record.get(c) is None else str(record.get(c)) for c in columns})
        if len(records) == READ_BATCH:
            yield pl.DataFrame(records, schema=dict.fromkeys(columns, pl.String))
            records = []
    if records:
        yield pl.DataFrame(records, schema=dict.fromkeys(columns, pl.String))


def _clean(raw: pl.DataFrame, path: Path, offset: int, seen: set[str]) -> pl.DataFrame:
    """Ids and texts of rows `offset`.. of the file; a row with neither text, or an id seen before, is an error."""
    frame = pl.DataFrame([stable_ids(raw, offset).alias("product_id"),
                          *(raw[c].cast(pl.String).fill_null("") for c in CATALOGUE_COLUMNS)])  # fmt: skip
    empty = (frame["product_title"].str.strip_chars() == "") & (frame["product_description"].str.strip_chars() == "")
    if empty.any():
        row = offset + int(empty.arg_true()[0]) + 1
        raise InputError(f"products file {path}, row {row}: product_title and product_description are both empty")
    for i, product_id in enumerate(frame["product_id"].to_list()):
        if product_id is None or product_id in seen:
            what = "has no product_id" if product_id is None else f"repeats product_id {product_id!r}"
            raise InputError(f"products file {path}, row {offset + i + 1} {what}; ids must be unique")
        seen.add(product_id)
    return frame
