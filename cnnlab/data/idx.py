"""IDX files (LeCun's MNIST format, gzipped or not) and the MNIST family: mnist, fashion-mnist, kmnist.

IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension; images are magic 0x00000803 (N×H×W), labels 0x00000801 (N).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.limits import human_bytes, physical_memory, short_int

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

CHUNK = 1 << 24  # payloads are read in 16 MiB pieces: a header that lies about the size allocates nothing


def _open(path: Path):
    """The file for reading, gunzipped on the fly when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_up_to(fh, n: int) -> bytearray:
    """At most `n` bytes, read in CHUNKs, so that memory grows only with the bytes the file really holds."""
    buf = bytearray()
    while len(buf) < n:
        block = fh.read(min(CHUNK, n - len(buf)))
        if not block:
            break
        buf += block
    return buf


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Decode one IDX file into a uint8 array, checking magic number and payload length. The header is read
    first: a shape needing more memory than the machine has is refused before the payload is read, and
    a gzip stream is decompressed only as far as the header says the payload goes."""
    path = Path(path)
    try:
        with _open(path) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: truncated IDX header ({len(head)} bytes)")
            magic = struct.unpack(">I", head)[0]
            if expect_magic is not None and magic != expect_magic:
                raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
            if head[0] or head[1] or head[2] != 0x08 or not 1 <= head[3] <= 4:
                raise DataError(f"{path}: bad magic number 0x{magic:08x} (not an unsigned-byte IDX file)")
            ndim = head[3]
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            need = math.prod(dims)  # a Python int: exact, where an int64 product of four uint32 overflows
            shape = "x".join(short_int(d) for d in dims)
            # Zero-length dims are counted as 1: (0, 2^31, 2^31) holds nothing, yet no array can take its shape.
            if math.prod(max(d, 1) for d in dims) > physical_memory():
                raise DataError(f"{path}: header claims shape {shape}, {human_bytes(need)}, more memory than "
                                f"this machine has ({human_bytes(physical_memory())}); refused before reading it")
            payload = _read_up_to(fh, need)
            if len(payload) < need:
                raise DataError(f"{path}: truncated payload: {short_int(len(payload))} bytes for shape {shape} "
                                f"({short_int(need)} needed)")
            trailing = len(fh.read(CHUNK))
            if trailing:
                more = "" if trailing < CHUNK else " or more"
                raise DataError(f"{path}: {short_int(trailing)}{more} trailing bytes after shape {shape}")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({exc})") from None
    # bytearray: a writable buffer, so torch.from_numpy on the result is safe.
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


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
