"""LIBSVM text files (`LABEL INDEX:VALUE INDEX:VALUE ...`, one sample a line, 1-based feature indices,
omitted features are 0; bzip2-compressed or plain) and the USPS digits as the LIBSVM data sets page
publishes them.

USPS facts, checked against torchvision's torchvision/datasets/usps.py (`USPS.split_list`,
github.com/pytorch/vision): the official split is `usps.bz2` (7,291 training images) and `usps.t.bz2`
(2,007 test images) under https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/, with the
MD5s below; each line is a label in 1..10 and 256 pixel values in [-1, 1] (16×16, row-major).
torchvision maps labels to 0..9 and pixels to ((v + 1) / 2 * 255) truncated to uint8; cnnlab rounds
instead of truncating, so a value written from a uint8 pixel reads back as that pixel (truncation turns
some into pixel - 1 through floating-point error); the two differ by at most 1 grey level.
"""

from __future__ import annotations

import bz2
import re
from pathlib import Path

import numpy as np

from ..errors import DataError

# A label, then whitespace-separated INDEX:VALUE pairs (exactly one colon each, nothing empty).
_LINE = re.compile(r"[^\s:]+(?:\s+[^\s:]+:[^\s:]+)*")

USPS = {
    "mirrors": ["https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"],
    "files": {"train": ("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197"),
              "test": ("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118")},
    "classes": [str(i) for i in range(10)],
    "shape": (16, 16),
}


def _text(path: Path) -> str:
    """The file's text, decompressed when it ends in .bz2; unreadable, broken bzip2 or binary → DataError."""
    try:
        if path.suffix == ".bz2":
            with bz2.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, ValueError) as exc:  # bz2 raises OSError("Invalid data stream") on garbage
        raise DataError(f"{path}: cannot read ({exc})") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a LIBSVM text file (byte {exc.start} is not ASCII)") from None


def _bad_line(path: Path, lineno: int, line: str, n_features: int | None) -> DataError:
    """A DataError naming the first thing wrong on one line (found by the slow, exact parse)."""
    parts = line.split()
    try:
        float(parts[0])
    except ValueError:
        return DataError(f"{path} line {lineno}: label {parts[0][:20]!r} is not a number")
    for tok in parts[1:]:
        index, sep, value = tok.partition(":")
        try:
            i = int(index)
            float(value)
        except ValueError:
            i = None
        if not sep or i is None:
            return DataError(f"{path} line {lineno}: {tok[:30]!r} is not INDEX:VALUE")
        if i < 1 or (n_features is not None and i > n_features):
            limit = f"1..{n_features}" if n_features else "≥ 1"
            return DataError(f"{path} line {lineno}: feature index {i} out of range ({limit})")
    return DataError(f"{path} line {lineno}: malformed LIBSVM line")


def read_libsvm(path: str | Path, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N×F float32 features, N float64 labels) from a LIBSVM file; F is `n_features` or the largest index.

    The whole file is parsed with one vectorised numpy conversion; only when that fails is it walked line
    by line to name the first bad line. Comments (`# ...`) and blank lines are skipped."""
    path = Path(path)
    lines = []
    for lineno, line in enumerate(_text(path).splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append((lineno, line))
    if not lines:
        raise DataError(f"{path}: no samples (empty LIBSVM file)")
    labels, counts, features = [], [], []
    for _, line in lines:
        head, *rest_ = line.split(None, 1)
        rest = rest_[0] if rest_ else ""
        labels.append(head)
        counts.append(rest.count(":"))
        features.append(rest)
    tokens = " ".join(features).replace(":", " ").split()
    try:
        if not all(_LINE.fullmatch(line) for _, line in lines):
            raise ValueError("a feature is not INDEX:VALUE")
        y = np.array(labels, dtype=np.float64)
        pairs = np.array(tokens, dtype=np.float64).reshape(-1, 2)
        index = pairs[:, 0]
        if not np.array_equal(index, np.round(index)) or (len(index) and index.min() < 1):
            raise ValueError("a feature index is not a positive integer")
        if n_features is not None and len(index) and index.max() > n_features:
            raise ValueError("a feature index is out of range")
    except ValueError:
        for lineno, line in lines:
            err = _bad_line(path, lineno, line, n_features)
            if str(err) != f"{path} line {lineno}: malformed LIBSVM line":
                raise err from None
        raise DataError(f"{path}: malformed LIBSVM data") from None
    width = n_features if n_features is not None else int(index.max(initial=0))
    x = np.zeros((len(lines), width), dtype=np.float32)
    rows = np.repeat(np.arange(len(lines)), counts)
    x[rows, index.astype(np.int64) - 1] = pairs[:, 1]
    return x, y


def read_usps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N×16×16 uint8 images, N int64 labels 0..9) from one of the official USPS LIBSVM files."""
    path = Path(path)
    h, w = USPS["shape"]
    x, y = read_libsvm(path, n_features=h * w)
    bad = np.flatnonzero((y != np.round(y)) | (y < 1) | (y > 10))
    if len(bad):
        raise DataError(f"{path}: sample {bad[0] + 1} has label {y[bad[0]]:g}; USPS labels are 1..10")
    outside = np.flatnonzero(np.abs(x).max(axis=1) > 1 + 1e-6)
    if len(outside):
        raise DataError(f"{path}: sample {outside[0] + 1} has a pixel outside [-1, 1]")
    images = np.rint((x.astype(np.float64) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return images.reshape(-1, h, w), y.astype(np.int64) - 1


def find_usps_file(folder: Path, name: str) -> Path | None:
    """`name` (e.g. usps.bz2) or its decompressed twin (usps) inside `folder`."""
    for candidate in (folder / name, folder / name.removesuffix(".bz2")):
        if candidate.is_file():
            return candidate
    return None
