"""Classified shards on disk: one Parquet file per shard, written atomically, under
<data>/classifications/<catalogue>/<approach>--<model>--<variant>/shard-00042.parquet, where
<catalogue> is the file's stem and a hash of its resolved path. A shard file records the fingerprint
of its rows and of the run settings, so a rerun skips it when neither changed. Concurrent runs never
share a file being written, and DuckDB's one-writer rule is kept: the warehouse reads the files
through a view (warehouse/classifications.py). The view reads only published snapshots: hard links to every shard of a catalogue,
made once all of them are written, so a failed or partial run leaves the view as it was."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from taxo_pipeline.dataset.google_mapping import GoogleMapping
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.files import write_atomic, write_parquet_atomic
from taxo_pipeline.processes import pid_alive
from taxo_pipeline.sie.model_catalogue import model_slug
from taxo_pipeline.warehouse.classifications import refresh_classifications
from taxo_pipeline.warehouse.store import Warehouse

SHARD_FILE = re.compile(r"shard-(\d{5,})\.parquet")
CANDIDATE = pa.struct([("category", pa.string()), ("score", pa.float64())])
SHARD_META = b"taxo/shard_fingerprint"
RUN_META = b"taxo/run_fingerprint"
SNAPSHOT = "snapshot-"  # a published, complete set of a run directory's shards
CURRENT = "current.json"  # names the run directory's published snapshot
STAGING = re.compile(r"\.snapshot-.*\.(\d+)\.[0-9a-f]{8}\.part")


def catalogue_name(path: Path) -> str:
    """The catalogue's results folder and `catalogue` value: its file stem, readable, and a hash of its
    resolved path, so two files never share results (`good.jsonl` and `other/good.csv`, `a b.csv` and
    `a_b.csv`) while a rerun of the same file, changed or not, finds its shards."""
    resolved = Path(path).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.stem).strip("._")[:60] or "catalogue"
    return f"{stem}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"


def classifications_root(data_dir: Path) -> Path:
    return Path(data_dir) / "classifications"


def run_directory(data_dir: Path, catalogue: str, key: ResultKey) -> Path:
    reranker = f"--{model_slug(key.reranker)}" if key.reranker else ""
    return classifications_root(data_dir) / catalogue / f"{key.approach}--{model_slug(key.model)}{reranker}--{key.variant}"


def shard_key(index: int) -> str:
    """The shard's name in its file and its Dagster partition key."""
    return f"{index:05d}"


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{shard_key(index)}.parquet"


def is_done(path: Path, shard_fingerprint: str, run_fingerprint: str) -> bool:
    """The shard file exists and was written from the same rows with the same settings."""
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return False  # unreadable: write it again
    return meta.get(SHARD_META) == shard_fingerprint.encode() and meta.get(RUN_META) == run_fingerprint.encode()


REVIEWED = "reviewed"  # the column: the category is a reviewer's (TAXO_CORRECTIONS)
SOURCE = "category_source"  # the column: merchant (the catalogue's own label), reviewer or predicted
MERCHANT, REVIEWER, PREDICTED = "merchant", "reviewer", "predicted"
SHARD_COLUMNS = 3  # part of a run's fingerprint: a shard written with other columns is written again


@dataclass(frozen=True)
class ShardRows:
    product_ids: list[str]
    ranked: list[list[tuple[str, float]]]  # empty for a skipped product
    confidence: np.ndarray
    skipped: list[str | None]  # why a product got no prediction
    reviewed: Sequence[str | None] = ()  # a reviewer's category (classification/reviewer_labels.py), else None
    merchant: Sequence[str | None] = ()  # the catalogue's own label at the run's depth, else None

    @property
    def categories_reviewed(self) -> list[str | None]:
        """Per product, the reviewer's category or None (all None for rows never given reviews)."""
        return list(self.reviewed) or [None] * len(self.product_ids)

    @property
    def known(self) -> list[tuple[str | None, str | None]]:
        """Per product, (category, source) where a person set it: a reviewer first, then the merchant."""
        merchant = list(self.merchant) or [None] * len(self.product_ids)
        return [(r, REVIEWER) if r is not None else (m, MERCHANT) if m is not None else (None, None)
                for r, m in zip(self.categories_reviewed, merchant, strict=True)]  # fmt: skip

    def with_known(self, reviewed: Sequence[str | None], merchant: Sequence[str | None] = ()) -> ShardRows:
        """Products whose category a person set (a review, the merchant's label): confidence 1, never skipped."""
        rows = ShardRows(self.product_ids, self.ranked, self.confidence, self.skipped, list(reviewed), list(merchant))
        set_by_person = np.array([c is not None for c, _ in rows.known], dtype=bool)
        skipped = [None if known else s for known, s in zip(set_by_person, self.skipped, strict=True)]
        return replace(rows, confidence=np.where(set_by_person, 1.0, self.confidence), skipped=skipped)


def _levels(category: str | None) -> list[str | None]:
    parts = category.split(" > ") if category else []
    return [" > ".join(parts[:level]) if len(parts) >= level else None for level in (1, 2, 3)]


def shard_table(
    key: ResultKey, catalogue: str, catalogue_fingerprint: str, index: int, rows: ShardRows,
    google: GoogleMapping | None = None,
) -> pa.Table:  # fmt: skip
    """One shard's rows; `google`: the Shopify -> Google mapping for the google_category columns (NULL without)."""
    n = len(rows.product_ids)
    known = rows.known
    top1 = [(c, None) if c is not None else r[0] if r else (None, None) for (c, _), r in zip(known, rows.ranked)]
    sources = [s if s is not None else PREDICTED if r else None for (_, s), r in zip(known, rows.ranked)]
    levels = list(zip(*(_levels(c) for c, _ in top1))) if n else [[], [], []]
    google_ids, google_names = google.google_columns([c for c, _ in top1]) if google else ([None] * n, [None] * n)
    constant = {"approach": key.approach, "model": key.model, "reranker": key.reranker, "variant": key.variant,
                "catalogue": catalogue, "catalogue_fingerprint": catalogue_fingerprint}  # fmt: skip
    return pa.table(
        {
            **{name: pa.array([value] * n, pa.string()) for name, value in constant.items()},
            "shard": pa.array([index] * n, pa.int32()),
            "product_id": pa.array(rows.product_ids, pa.string()),
            "category": pa.array([c for c, _ in top1], pa.string()),
            SOURCE: pa.array(sources, pa.string()),
            "score": pa.array([s for _, s in top1], pa.float64()),
            "l1": pa.array(levels[0], pa.string()),
            "l2": pa.array(levels[1], pa.string()),
            "l3": pa.array(levels[2], pa.string()),
            "google_category_id": pa.array(google_ids, pa.int64()),
            "google_category": pa.array(google_names, pa.string()),
            "confidence": pa.array(np.where([c is not None for c, _ in top1], rows.confidence, np.nan), pa.float64(),
                                   from_pandas=True),  # fmt: skip
            REVIEWED: pa.array([s == REVIEWER for _, s in known], pa.bool_()),
            "top_k": pa.array([[{"category": c, "score": s} for c, s in r] for r in rows.ranked], pa.list_(CANDIDATE)),
            "skipped": pa.array(rows.skipped, pa.string()),
            "classified_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def write_shard(path: Path, table: pa.Table, shard_fingerprint: str, run_fingerprint: str) -> None:
    meta = {**(table.schema.metadata or {}), SHARD_META: shard_fingerprint.encode(), RUN_META: run_fingerprint.encode()}
    write_parquet_atomic(table.replace_schema_metadata(meta), path)


def restamp(path: Path, catalogue_fingerprint: str) -> None:
    """A shard kept from an earlier version of the catalogue: only its catalogue fingerprint changes."""
    table = pq.read_table(path)
    if table.num_rows and table["catalogue_fingerprint"][0].as_py() != catalogue_fingerprint:
        column = pa.array([catalogue_fingerprint] * table.num_rows, pa.string())
        table = table.set_column(table.schema.get_field_index("catalogue_fingerprint"), "catalogue_fingerprint", column)
        write_parquet_atomic(table, path)


def shard_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("shard-*.parquet") if SHARD_FILE.fullmatch(p.name))


def remove_beyond(directory: Path, shards: int) -> list[Path]:
    """Shard files of a longer earlier version of the catalogue."""
    stale = [p for p in shard_files(directory) if int(SHARD_FILE.fullmatch(p.name).group(1)) >= shards]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def publish(
    directory: Path, fingerprints: Sequence[str], run_fingerprint: str, catalogue_fingerprint: str
) -> Path | None:
    """Once every shard of the catalogue is written from its current rows and settings, make them the run
    directory's published snapshot (hard links, so later rewrites of a shard file never change it) and
    name it in current.json (an atomic rename); older snapshots go. The snapshot, or None while a shard
    is missing or stale (the view keeps showing the last snapshot)."""
    files = [shard_path(directory, i) for i in range(len(fingerprints))]
    if not all(is_done(f, fp, run_fingerprint) for f, fp in zip(files, fingerprints, strict=True)):
        return None
    name = f"{SNAPSHOT}{catalogue_fingerprint}-{run_fingerprint}"
    if current_snapshot(directory) == directory / name:
        return directory / name
    _remove_stale_staging(directory)
    staging = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    staging.mkdir()
    for file in files:
        try:
            os.link(file, staging / file.name)
        except OSError:  # a file system without hard links
            shutil.copy2(file, staging / file.name)
    try:
        staging.rename(directory / name)
    except OSError:  # another run published the same shards first
        shutil.rmtree(staging)
    record = {"snapshot": name, "shards": len(files), "catalogue_fingerprint": catalogue_fingerprint}
    write_atomic(directory / CURRENT, lambda tmp: tmp.write_text(json.dumps(record)))
    for old in directory.glob(f"{SNAPSHOT}*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return directory / name


def current_snapshot(directory: Path) -> Path | None:
    try:
        return Path(directory) / json.loads((Path(directory) / CURRENT).read_text())["snapshot"]
    except (OSError, ValueError, KeyError):
        return None


def _remove_stale_staging(directory: Path) -> None:
    for staging in directory.glob(".snapshot-*.part"):
        if (match := STAGING.fullmatch(staging.name)) and not pid_alive(int(match.group(1))):
            shutil.rmtree(staging, ignore_errors=True)


def refresh_view(warehouse: Warehouse, data_dir: Path) -> None:
    """`classifications`: the published snapshot of every catalogue and run, read at query time (a run
    in progress or one that failed is not seen); before any run published one, no rows, with the columns
    of a shard file (so the view, and `review_queue` on it, exist from the first materialization)."""
    root = classifications_root(data_dir)
    shards, current = f"{root}/*/*/{SNAPSHOT}*/shard-*.parquet", f"{root}/*/*/{CURRENT}"
    # what the two globs need to find (with no file, DuckDB fails to create the view)
    published = any(root.glob(f"*/*/{SNAPSHOT}*/shard-*.parquet")) and any(root.glob(f"*/*/{CURRENT}"))
    refresh_classifications(warehouse, shards if published else None, current, _no_rows())


def _no_rows() -> pa.Table:
    """A shard file's columns (as run.write_shard writes them: needs_review last), without a row."""
    empty = shard_table(ResultKey("", "", ""), "", "", 0, ShardRows([], [], np.empty(0), []))
    return empty.append_column("needs_review", pa.array([], pa.bool_()))  # review.with_review's column


EXPORT_TYPES = (".parquet", ".csv", ".jsonl")


def check_output(output: Path) -> None:
    """Refuse an --output that could not be written, before any work."""
    if output.is_dir():
        raise InputError(f"--output {output} is a directory: name a file in it, e.g. {output / 'classified.parquet'}")
    if output.suffix.lower() not in EXPORT_TYPES:
        raise InputError(f"--output {output}: unsupported extension {output.suffix!r} (use .parquet, .csv or .jsonl)")
    for parent in output.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise InputError(f"--output {output}: {parent} is a file, not a directory: choose a path in a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"--output {output}: cannot write in {parent} (permission denied): choose another path")
        return


def export(files: Sequence[Path], output: Path) -> int:
    """The shards' rows in one file, by extension (.parquet, .csv, .jsonl), written atomically one shard
    at a time; in CSV the top-k list is a JSON array."""
    check_output(output)
    suffix = output.suffix.lower()
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with tmp.open("wb") as handle:
            writer = None
            for number, file in enumerate(files):
                table = pq.read_table(file).replace_schema_metadata(None)
                rows += table.num_rows
                if suffix != ".parquet":
                    _write_text(handle, table, suffix, header=number == 0)
                    continue
                writer = writer or pq.ParquetWriter(handle, table.schema)
                writer.write_table(table)
            if writer is not None:
                writer.close()

    write_atomic(output, write)
    return rows


def _write_text(handle, table: pa.Table, suffix: str, header: bool) -> None:
    frame = pl.from_arrow(table)
    if suffix == ".jsonl":
        frame.write_ndjson(handle)
        return
    top_k = [json.dumps(v) for v in table["top_k"].to_pylist()]
    frame.with_columns(pl.Series("top_k", top_k)).write_csv(handle, include_header=header)
