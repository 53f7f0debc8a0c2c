"""IDX files (LeCun's MNIST format, gzipped or not) and the MNIST family: mnist, fashion-mnist, kmnist.

IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension; images are magic 0x00000803 (N×H×W), labels 0x00000801 (N).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# Official file names (the same four for every member of the family) and MD5s of the gzipped files,
# checked against torchvision's torchvision/datasets/mnist.py (MNIST, FashionMNIST and KMNIST
# `resources`; github.com/pytorch/vision).
# Mirrors are tried in order: for MNIST the PyTorch S3 copy first (yann.lecun.com often answers 403 to
# scripts); Fashion-MNIST from Zalando's S3 bucket, KMNIST from ROIS-DS CODH, as torchvision lists them.
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_FAMILY = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        "md5": ["f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"],
        "classes": [str(i) for i in range(10)],
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"],
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot"],
    },
    "kmnist": {
        "mirrors": ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
        "md5": ["bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"],
        "classes": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    },
}

def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; unreadable or broken gzip → DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Decode one IDX file into a uint8 array, checking magic number and payload length."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    if raw[0] or raw[1] or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: bad magic number 0x{magic:08x} (not an unsigned-byte IDX file)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    need = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header < need:
        raise DataError(f"{path}: truncated payload: {len(raw) - header} bytes for shape {dims} "
                        f"({need} needed)")
    if len(raw) - header > need:
        raise DataError(f"{path}: {len(raw) - header - need} trailing bytes after shape {dims}")
    # bytearray: a writable buffer, so torch.from_numpy on the result is safe.
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or its un-gzipped twin inside `folder`."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return None


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N×H×W images, N labels) from an images/labels file pair, checking both magics and equal counts."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path.name} holds {len(images)} images but {labels_path.name} holds "
                        f"{len(labels)} labels")
    return images, labels
