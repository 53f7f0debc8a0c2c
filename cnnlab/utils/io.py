"""Atomic file writes: a reader (or a kill at any moment) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


# errno values meaning "the disk (or quota) is full": the write failed for want of space, not for a bug.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TMP_SUFFIX = ".tmp"


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """`path` as a file the user asked us to write (e.g. `--out samples.png`), checked before any work: not
    an existing folder, and its nearest existing parent a writable folder. Creates nothing; raises a
    one-line ConfigError naming the option."""
    from ..errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write into {parent} (permission denied)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsync'ed and renamed onto `path`.

    The temporary file is `.NAME.<pid>.<random>.tmp`: a writer killed mid-write leaves it behind, and
    `remove_stale_temps` tells it apart (its process is gone) from one another process is writing now.
    A write that fails because the disk is full is re-raised as OSError(ENOSPC) naming `path` (torch.save
    and safetensors report it in their own words), with the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
        except Exception as exc:
            if disk_full(exc, path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, raised while writing into `folder`, means the disk or quota is full: an OSError with
    that errno, a library's message naming it, or (torch.save says only "unexpected pos") no free space left."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    text = str(exc)
    if "os error 28" in text or "No space left" in text or "Disk quota exceeded" in text:
        return True
    if isinstance(exc, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            return False
    return False


def remove_stale_temps(folder: str | os.PathLike, *, all_of_them: bool = False) -> list[Path]:
    """Delete the temporary files (`.NAME.<pid>.<random>.tmp`) that writers killed mid-write left in
    `folder`; returns them. Only those whose process is gone, unless `all_of_them` (the caller holds the
    folder's lock, so no other process writes there). A temp file without a process id (written before
    ids were recorded) counts as stale when it is over an hour old."""
    import time

    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX)) or not entry.is_file() or entry.is_symlink():
            continue
        parts = name[1:-len(TMP_SUFFIX)].rsplit(".", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        try:
            if all_of_them or (pid is not None and not alive(pid)) or \
                    (pid is None and time.time() - entry.stat().st_mtime > 3600):
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a flat name → tensor dict as safetensors (contiguous CPU copies), atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file and rename; obj must hold only tensors and plain Python containers/scalars
    so that it loads back with torch.load(weights_only=True)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
