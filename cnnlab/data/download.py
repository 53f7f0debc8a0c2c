"""Fetch dataset files into the cache: mirrors in order, HTTP Range resume of a `.part` file, checksum
verified before an atomic rename, so the cache only ever holds complete, verified files.

Stdlib urllib only. `--offline` (offline=True) forbids any network access; a file already present (and
verified) is used as is.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from ..errors import DataError

CHUNK = 1 << 16


def cache_home() -> Path:
    """Root of cnnlab's cache: $CNNLAB_HOME, else $XDG_CACHE_HOME/cnnlab, else ~/.cache/cnnlab."""
    if os.environ.get("CNNLAB_HOME"):
        return Path(os.environ["CNNLAB_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def file_digest(path: str | os.PathLike, algo: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks (datasets are too big to read at once)."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _algo(checksum: str) -> str:
    """MD5 (32 hex digits) or SHA-256 (64), told apart by length."""
    return {32: "md5", 64: "sha256"}.get(len(checksum), "")


def verify(path: Path, checksum: str | None) -> bool:
    """Whether `path` matches `checksum` (MD5 or SHA-256 hex); True when no checksum is known."""
    if not checksum:
        return True
    algo = _algo(checksum)
    if not algo:
        raise DataError(f"{path.name}: checksum {checksum!r} is neither MD5 nor SHA-256")
    return file_digest(path, algo) == checksum.lower()


def _one_line(reason, limit: int = 120) -> str:
    """A network error's text as one short line (servers may echo raw bytes, CR/LF included)."""
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part` (Range from its current size). Raises on any network error or
    short read; whatever arrived stays in `part` for the next attempt to resume from."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete: the range starts at the end
            return
        raise
    with resp:
        if have and resp.status != 206:  # server ignored Range: start over
            have = 0
        total = resp.headers.get("Content-Length")
        expected = int(total) if total is not None and total.isdigit() else None
        got = 0
        try:
            fh = open(part, "ab" if have else "wb")
        except OSError as exc:  # the cache, not the mirror: no other mirror would help
            raise DataError(f"{part}: cannot write the download ({exc.strerror or exc})") from None
        with fh:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as exc:
                    raise DataError(f"{part}: cannot write the download ({exc.strerror or exc})") from None
                got += len(block)
            fh.flush()
            os.fsync(fh.fileno())
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")


def download(filename: str, urls: Sequence[str], dest_dir: str | os.PathLike, checksum: str | None = None,
             *, offline: bool = False, retries: int = 3, timeout: float = 30.0) -> Path:
    """Return `dest_dir/filename`, downloading it from the first working URL of `urls` if needed.

    Each URL gets `retries` attempts; an attempt that breaks mid-file is resumed with an HTTP Range
    request. The checksum (MD5 or SHA-256 hex) is checked before the `.part` file is renamed into place;
    a mismatch deletes the partial file and moves on to the next mirror. When every mirror fails, the
    DataError names each mirror once with its own failure.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    if target.exists():
        if verify(target, checksum):
            return target
        if offline:
            raise DataError(f"{target}: checksum mismatch and --offline forbids downloading a fresh copy")
        target.unlink()
    if offline:
        raise DataError(f"{target} is missing and --offline forbids downloading it "
                        f"(put the file there or pass --data-dir)")
    if not urls:
        raise DataError(f"{target} is missing and no download URL is known")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest_dir}: cannot create the download folder ({exc.strerror or exc})") from None
    part = target.with_name(target.name + ".part")
    failures = []  # one entry per mirror that did not give a verified file
    for url in urls:
        failure = _fetch_from_mirror(url, part, retries, timeout)
        if failure is None and not part.exists():
            failure = "the server sent no data"
        if failure is None and not verify(part, checksum):
            failure = f"checksum mismatch (expected {_algo(checksum or '')} {checksum})"
        if failure is not None:
            part.unlink(missing_ok=True)  # never resume one mirror's bytes from another
            failures.append(f"{url}: {failure}")
            continue
        os.replace(part, target)
        return target
    raise DataError(f"{filename}: download failed from every mirror ({'; '.join(failures)}); nothing was kept")


def _fetch_from_mirror(url: str, part: Path, retries: int, timeout: float) -> str | None:
    """Download `url` into `part` in up to `retries` attempts, each resuming the last; None on success,
    else why this mirror failed (its last error, and how many attempts it had)."""
    retries = max(1, retries)
    reason = ""
    for attempt in range(retries):
        try:
            _fetch_once(url, part, timeout)
            return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"  # a 404/403 will not get better on retry: next mirror
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # URLError/OSError: refused, reset, timed out, short read; HTTPException: a malformed
            # response or IncompleteRead. Whatever arrived stays in `part` for the next attempt.
            reason = _one_line(getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
            if attempt + 1 < retries:
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
    return reason + (f" ({retries} attempts)" if retries > 1 else "")
