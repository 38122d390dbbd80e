"""Resolve a source (local path or URL) to a local file, caching downloads in data/.

Downloads go to a temp file that is renamed into place only when complete, so an
interrupted download never leaves a half file that a later run would take as cached.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from taxo_pipeline.errors import InputError
from taxo_pipeline.files import write_atomic

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def cache_name_for(url: str, default_url: str, default_name: str) -> str:
    """The seed's file name for the default source; other URLs get a hash prefix so two
    different URLs with the same base name never share a cache entry."""
    if url == default_url:
        return default_name
    base = Path(urlparse(url).path).name or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:8]}-{base}"


def resolve_source(
    source: str,
    *,
    what: str,
    env_var: str,
    cache_dir: Path,
    cache_name: str,
    refresh: bool = False,
    timeout_s: float = 60.0,
) -> Path:
    """Return a local path for `source`, downloading a URL into `cache_dir/cache_name` once."""
    if not is_url(source):
        path = Path(source).expanduser()
        if path.is_dir():
            raise InputError(f"{what} file {path} is a directory, not a file (set {env_var} or pass the file's path)")
        if not path.is_file():
            raise InputError(f"{what} file {path} does not exist (set {env_var} or pass a path that exists)")
        return path.resolve()

    target = cache_dir / cache_name
    if target.is_file() and not refresh:
        log.info("%s: using cached %s (refresh to download again)", what, target)
        return target

    def download(tmp: Path) -> None:
        with tmp.open("wb") as out:
            _download(source, out, what=what, env_var=env_var, timeout_s=timeout_s)

    write_atomic(target, download)
    return target


def _download(url: str, out, *, what: str, env_var: str, timeout_s: float) -> None:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            next_report = 50 * CHUNK
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if done >= next_report:
                    rate = done / max(time.monotonic() - started, 1e-9) / CHUNK
                    log.info("%s: %d/%s MiB downloaded (%.1f MiB/s)", what, done // CHUNK, total // CHUNK or "?", rate)
                    next_report += 50 * CHUNK
            if total and done != total:
                raise http.client.IncompleteRead(b"", total - done)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or repr(exc)
        raise InputError(
            f"could not download {what} from {url}: {reason}. "
            f"To use a local copy instead, set {env_var}=/path/to/file (or pass it on the command line)"
        ) from exc

