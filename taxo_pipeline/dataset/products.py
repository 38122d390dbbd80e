"""Read a product file (Parquet with the Hugging Face schema, JSON Lines or CSV) into one frame.

Required columns: product_title, product_description, ground_truth_category (not for a catalogue to
classify: `labelled=False`). The image and potential categories are optional (a text-only catalogue
has neither). Every row gets a stable
`product_id` from its source row, kept through every later table.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from taxo_pipeline.errors import InputError

TEXT_COLUMNS = ("product_title", "product_description", "ground_truth_category")
CATALOGUE_COLUMNS = ("product_title", "product_description")  # an unlabelled catalogue's
POTENTIALS = "potential_product_categories"
IMAGE = "product_image"
IMAGE_TYPE = pl.Struct({"bytes": pl.Binary, "path": pl.String})
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


def read_products(path: Path, labelled: bool = True) -> pl.DataFrame:
    path = Path(path)
    raw = {"parquet": _read_parquet, "jsonl": _read_jsonl, "csv": _read_csv}[file_format(path)](path)
    required = TEXT_COLUMNS if labelled else CATALOGUE_COLUMNS
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise InputError(
            f"products file {path} lacks required column(s) {', '.join(missing)} "
            f"(it has: {', '.join(raw.columns) or 'none'})"
        )
    if raw.height == 0:
        raise InputError(f"products file {path} holds no rows")
    return _normalise(raw, path)


def file_format(path: Path, what: str = "products") -> str:
    """parquet, jsonl or csv: the format of a non-empty file of a supported extension, else an error."""
    _check_is_file(path, what)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{what} file {path}: unsupported extension {path.suffix!r} (use .parquet, .jsonl or .csv)")
    if path.stat().st_size == 0:  # each reader below words this its own way
        raise InputError(f"{what} file {path} is empty (0 bytes)")
    return fmt


def numbered_records(path: Path, what: str = "products") -> Iterator[tuple[int, dict]]:
    """(where, record) for each row of a product-like file: where is the JSON Lines line, or the CSV or
    Parquet data row (1-based, the header not counted), as `row_unit` names it."""
    fmt = file_format(path, what)
    if fmt == "jsonl":
        yield from json_lines(path, what)
        return
    frame = _read_parquet(path) if fmt == "parquet" else _read_csv(path)
    yield from enumerate(frame.iter_rows(named=True), start=1)


def row_unit(path: Path) -> str:
    """How numbered_records counts: `line` in JSON Lines, `row` in CSV and Parquet."""
    return "line" if FORMATS.get(path.suffix.lower()) == "jsonl" else "row"


def _check_is_file(path: Path, what: str = "products") -> None:
    # pyarrow would read a directory as a dataset of its parts.
    if path.is_dir():
        raise InputError(f"{what} file {path} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.from_arrow(pq.read_table(path))
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(f"products file {path} is not a readable Parquet file: {exc}") from exc


def json_lines(path: Path, what: str = "products") -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line of a JSON Lines file; a line that is not
    UTF-8 or not a JSON object is named by its number."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{what} file {path}, line {number}: not valid UTF-8 at byte {exc.start} "
                    f"({raw[max(exc.start - 20, 0):exc.end + 20]!r}): save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{what} file {path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{what} file {path}, line {number}: expected a JSON object")
            yield number, record


def json_records(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSON Lines file, one at a time."""
    return (record for _, record in json_lines(path))


def _read_jsonl(path: Path) -> pl.DataFrame:
    records = list(json_records(path))
    columns = sorted({key for record in records for key in record})
    return pl.DataFrame({c: [r.get(c) for r in records] for c in columns}, strict=False)


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError as exc:
        raise InputError(
            f"products file {path} holds no header row (expected a first line naming the columns "
            f"{', '.join(TEXT_COLUMNS)})"
        ) from exc
    except Exception as exc:
        raise InputError(f"products file {path} is not a readable CSV file: {exc}") from exc
    if POTENTIALS in frame.columns:
        frame = frame.with_columns(
            pl.Series(POTENTIALS, [_json_list(v, path, i) for i, v in enumerate(frame[POTENTIALS])])
        )
    return frame


def _json_list(value: str | None, path: Path, index: int) -> list[str] | None:
    if value is None or not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"products file {path}, row {index + 1}: {POTENTIALS} must be a JSON list of paths, got {value[:80]!r}"
        ) from exc
    if not isinstance(parsed, list):
        raise InputError(f"products file {path}, row {index + 1}: {POTENTIALS} must be a JSON list")
    return parsed


def _image_value(value, base_dir: Path, index: int, path: Path) -> dict | None:
    """JSON/CSV images: a path to an image file, or {"bytes": base64, "path": name}."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        file = (base_dir / value).resolve()
        if not file.is_file():
            raise InputError(f"products file {path}, row {index + 1}: image file {file} does not exist")
        return {"bytes": file.read_bytes(), "path": value}
    if isinstance(value, dict):
        data = value.get("bytes")
        return {"bytes": base64.b64decode(data) if isinstance(data, str) else data, "path": value.get("path")}
    raise InputError(f"products file {path}, row {index + 1}: {IMAGE} must be a file path or an object")


def stable_ids(raw: pl.DataFrame, offset: int = 0) -> pl.Series:
    """`offset`: the file row of raw's first row, for a file read in chunks."""
    if "product_id" in raw.columns:
        return raw["product_id"].cast(pl.String)
    if "row_index" in raw.columns:
        index = raw["row_index"].cast(pl.String)
        if "split" in raw.columns:
            return (raw["split"].cast(pl.String) + "-" + index).alias("product_id")
        return index
    return pl.Series(range(offset, offset + raw.height)).cast(pl.String)


def _normalise(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    ids = stable_ids(raw).alias("product_id")
    if (repeated := ids.filter(ids.is_duplicated()).unique(maintain_order=True)).len():
        # results are keyed by product id: a repeated one would be joined to every row that carries it
        shown = ", ".join(repr(i) for i in repeated.head(5).to_list())
        raise InputError(f"products file {path}: {repeated.len()} product_id values repeat (e.g. {shown}); ids must be unique")
    columns = [ids]
    columns += [raw[c].cast(pl.String) for c in TEXT_COLUMNS if c in raw.columns]
    if POTENTIALS in raw.columns:
        try:
            columns.append(raw[POTENTIALS].cast(pl.List(pl.String)))
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"products file {path}: {POTENTIALS} must be a list of strings ({exc})") from exc
    if IMAGE in raw.columns:
        image = raw[IMAGE]
        if image.dtype != IMAGE_TYPE:
            values = [_image_value(v, path.parent, i, path) for i, v in enumerate(image.to_list())]
            image = pl.Series(IMAGE, values, dtype=IMAGE_TYPE)
        columns.append(image)
    return pl.DataFrame(columns)
