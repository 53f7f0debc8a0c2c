"""CIFAR-10 / CIFAR-100 binary versions: fixed-length records of label byte(s) + 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, row-major 32×32). CIFAR-100 records carry coarse then fine label."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.limits import check_memory
from .archive import check_tar

# The binary archives' names and MD5s are those on the dataset page, https://www.cs.toronto.edu/~kriz/cifar.html
# ("CIFAR-10 binary version (suitable for C programs)": c32a1d4a…; "CIFAR-100 binary version": 03b5dce0…),
# also used by e.g. the Rust/C++ loaders that read the binary version. (torchvision's cifar.py lists only the
# Python-pickle archives, c58f3010… and eb9058c3…, which cnnlab never reads: no unpickling of downloads.)
CIFAR = {
    "cifar10": {
        "archive": "cifar-10-binary.tar.gz", "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"], "folder": "cifar-10-batches-bin",
        "train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"],
        "label_bytes": 1, "names": "batches.meta.txt",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
    "cifar100": {
        "archive": "cifar-100-binary.tar.gz", "md5": "03b5dce01913d631647c71ecec9e9cb8",
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"], "folder": "cifar-100-binary",
        "train": ["train.bin"], "test": ["test.bin"], "label_bytes": 2, "names": "fine_label_names.txt",
        "classes": None,  # read from fine_label_names.txt, else "0".."99"
    },
}
RECORD_PIXELS = 3 * 32 * 32
STAGE_PREFIX = ".extract."


def read_cifar_bin(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one binary batch into (N, 3, 32, 32) uint8 images and labels (the fine label for CIFAR-100)."""
    try:
        check_memory(path.stat().st_size, f"{path} ({path.stat().st_size:,} bytes, read whole)")
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    record = label_bytes + RECORD_PIXELS
    if raw.size == 0 or raw.size % record:
        raise DataError(f"{path}: truncated payload: {raw.size} bytes is not a whole number of "
                        f"{record}-byte records")
    rows = raw.reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def locate(folder: Path, spec: dict) -> Path | None:
    """The directory holding the .bin files: `folder` itself or its official sub-folder."""
    for d in (folder, folder / spec["folder"]):
        if all((d / f).exists() for f in spec["train"] + spec["test"]):
            return d
    return None


def extract(archive: Path, dest: Path, spec: dict) -> Path:
    """Extract only the expected regular members of the official archive into dest/<folder>, via a
    staging directory renamed into place (so an interrupted extraction leaves nothing half-written)."""
    wanted = {f"{spec['folder']}/{n}" for n in spec["train"] + spec["test"] + [spec["names"]]}
    final = dest / spec["folder"]
    if final.exists():  # not made by us (ours appear whole, by rename): never delete a user's files
        missing = [n for n in spec["train"] + spec["test"] if not (final / n).exists()]
        raise DataError(f"{final}: folder exists but lacks {', '.join(missing)}; complete or remove it")
    remove_stale_stages(dest)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}.", dir=dest))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in check_tar(tar, stage, archive):  # every member confined to the target, or refused
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    src = tar.extractfile(member)
                    with src, open(stage / Path(name).name, "wb") as out:
                        shutil.copyfileobj(src, out)
        if not all((stage / n).exists() for n in spec["train"] + spec["test"]):
            raise DataError(f"{archive}: archive lacks the expected {spec['folder']}/*.bin members")
        stage.rename(final)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: cannot extract ({exc})") from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return final


def remove_stale_stages(dest: Path) -> None:
    """Delete the staging folders of extractions whose process was killed (their pid is in the name)."""
    from ..utils.io import alive

    for stage in dest.glob(f"{STAGE_PREFIX}*"):
        pid = stage.name[len(STAGE_PREFIX):].partition(".")[0]
        if stage.is_dir() and not stage.is_symlink() and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def read_cifar(folder: Path, spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train images, train labels, test images, test labels, class names) from a located folder."""
    def read_all(names):
        parts = [read_cifar_bin(folder / n, spec["label_bytes"]) for n in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    xtr, ytr = read_all(spec["train"])
    xte, yte = read_all(spec["test"])
    classes = spec["classes"]
    names_file = folder / spec["names"]
    if classes is None:
        if names_file.exists():
            classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        if not classes or len(classes) != 100:
            classes = [str(i) for i in range(100)]
    top = int(max(ytr.max(initial=0), yte.max(initial=0)))
    if top >= len(classes):
        raise DataError(f"{folder}: label {top} out of range for {len(classes)} classes")
    return xtr, ytr, xte, yte, list(classes)
