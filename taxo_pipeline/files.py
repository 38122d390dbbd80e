"""Atomic file writes (a reader never sees a half-written file) and content hashes."""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxo_pipeline.processes import pid_alive

# A temp file left by a writer that died is removed only once it is this old, and its writer's pid is dead:
# a live writer on another host (a shared folder) has a pid this host cannot see, but it keeps writing.
STALE_TEMP_S = 600.0


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temp_path)`, then rename the temp file over `path`; on failure `path` is untouched.

    Each call gets its own temp name beside `path` (same file system, so the rename is atomic):
    concurrent writers of one target never write or remove each other's temp file, and the last
    rename wins with a whole file. The name is created with O_EXCL so a clash can never be shared,
    and with the usual 0666 & ~umask permissions (mkstemp would leave the result 0600). It carries
    the writer's pid, so the temp file of a writer killed mid-write is removed by a later write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.part")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(path: Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temp files of `path` whose writer process is gone and which are older than
    `older_than_s`; returns them. Only names write_atomic makes are touched."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{16}}\.part")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        match = pattern.fullmatch(candidate.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        try:
            if time.time() - candidate.stat().st_mtime < older_than_s:
                continue
            candidate.unlink()
        except FileNotFoundError:  # another writer removed it first
            continue
        removed.append(candidate)
    return removed


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content; computed again only when its size or mtime changes, since
    sources and weight files are hashed on every sensor tick and every main-job run."""
    stat = path.stat()
    return _content_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _content_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
