"""Atomic file writes (a reader never sees a half-written file) and content hashes."""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temp_path)`, then rename the temp file over `path`; on failure `path` is untouched.

    Each call gets its own temp name beside `path` (same file system, so the rename is atomic):
    concurrent writers of one target never write or remove each other's temp file, and the last
    rename wins with a whole file. The name is created with O_EXCL so a clash can never be shared,
    and with the usual 0666 & ~umask permissions (mkstemp would leave the result 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
