"""The bad-input corpus, part 1: dataset files. Every case writes its bad input here (no binary blobs), runs
the real `python -m cnnlab ...` in a subprocess and asserts: exit 2, exactly one line on stderr naming the
file or option and the problem, no traceback, nothing written or half-written (the case folder, which is
also the working directory, is byte-for-byte what it was), and nothing executed (payloads that would run
code write a marker file, which must never appear).

The other parts (test_bad_inputs_config.py: options, config files, models, resources, environment;
test_bad_inputs_runs.py: weights, checkpoints and run directories) use the runner defined here.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MARKER = "EXECUTED"  # what a payload that ran would create, beside the case folder


class Case(NamedTuple):
    """One bad input: a name, the command line ({d} is the case folder), what the error line must contain,
    and the function that writes the bad input into the case folder."""

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    make: Callable[[Path], None] = lambda d: None


def params(cases: list[Case]) -> list:
    """pytest parameters, one per case, named by the case."""
    return [pytest.param(case, id=case.id) for case in cases]


class Evil:
    """Unpickling this runs `touch MARKER`: any file holding it must be refused before it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def marker_of(d: Path) -> Path:
    return d.parent / MARKER


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` (not following links): file bytes, link targets, folders."""
    state = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                state[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                state[rel] = ("dir",)
            else:
                state[rel] = ("file", p.read_bytes())
    return state


def cnnlab(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNLAB_HOME": str(cwd.parent / "cache"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess, command: str, needles) -> str:
    """Exit 2, one stderr line "cnnlab COMMAND: error: ..." holding every needle, no traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    lines = err.splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"cnnlab {command}") and ": error: " in lines[0], lines[0]  # (`explain MODEL`)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_case(case: Case, tmp_path: Path, base: Path | None = None) -> str:
    """Write the case's input (into a copy of `base`, a prepared folder, when given), run it, check the refusal
    and that nothing changed or ran; the error line."""
    d = tmp_path / "case"
    if base is None:
        d.mkdir()
    else:
        shutil.copytree(base, d, symlinks=True)
    case.make(d)
    before = snapshot(d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]
    proc = cnnlab(*argv, cwd=d)
    line = assert_refused(proc, argv[0], [n.replace("{d}", str(d)) for n in case.needles])
    assert snapshot(d) == before, "the refused command wrote into the case folder"
    assert not marker_of(d).exists(), "a payload in the bad input was executed"
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.tmp"))
    return line


# --- writers of bad inputs -----------------------------------------------------------------------------------

def idx(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def mnist(d: Path, mutate=None, sizes=None, n=(40, 20), gz=True) -> None:
    """The four MNIST files in d/m; `mutate(name, raw) -> bytes` damages one, `sizes` gives (train, test)
    image sizes."""
    folder = d / "m"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for (prefix, count), side in zip((("train", n[0]), ("t10k", n[1])), sizes or (28, 28)):
        x = rng.integers(0, 256, (count, side, side), dtype=np.uint8)
        y = np.arange(count, dtype=np.uint8) % 10
        for kind, arr, magic in (("images-idx3", x, 0x803), ("labels-idx1", y, 0x801)):
            name = f"{prefix}-{kind}-ubyte"
            raw = idx(arr, magic)
            raw = mutate(name, raw) if mutate else raw
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)


def on(target: str, change):
    """A `mutate` that changes only file `target`."""
    return lambda name, raw: change(raw) if name == target else raw


def regzip_damaged(d: Path, cut: bool) -> None:
    mnist(d)
    path = d / "m" / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    if cut:
        raw = raw[:len(raw) // 2]
    else:
        raw[-6] ^= 0xFF  # inside the CRC32 trailer
    path.write_bytes(bytes(raw))


TERABYTE_DIMS = struct.pack(">3I", 60000, 1 << 20, 1 << 20)  # 60,000 images of 2^20 x 2^20 pixels: 60 PiB


def cifar(d: Path, name="cifar10", n=20, label=None, cut=0) -> None:
    """A CIFAR binary folder d/c; `label` overrides every label byte, `cut` bytes are cut off test_batch."""
    from cnnlab.data.cifar import CIFAR

    spec = CIFAR[name]
    folder = d / "c"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lb = spec["label_bytes"]
    for fname in spec["train"] + spec["test"]:
        labels = np.arange(n) % 10
        lab = np.stack([labels] * lb, 1).astype(np.uint8)
        if label is not None:
            lab[:, -1] = label
        raw = np.concatenate([lab, rng.integers(0, 256, (n, 3072), dtype=np.uint8)], 1).tobytes()
        if cut and fname in spec["test"]:
            raw = raw[:-cut]
        (folder / fname).write_bytes(raw)


def npz(name: str, **arrays):
    def make(d: Path) -> None:
        np.savez(d / name, **arrays)
    return make


def npz_object_payload(d: Path) -> None:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Evil(marker_of(d)), 1
    np.savez(d / "obj.npz", x=arr, y=np.arange(2))


def npz_truncated(d: Path) -> None:
    np.savez(d / "cut.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    raw = (d / "cut.npz").read_bytes()
    (d / "cut.npz").write_bytes(raw[:len(raw) // 2])


X = np.zeros((20, 8, 8), np.uint8)
Y = np.arange(20) % 2


def png(path: Path, size=(8, 8), mode="L", value=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(len(str(path))).integers(0, 256, size[::-1], dtype=np.uint8)
    Image.fromarray(arr if value is None else np.full(size[::-1], value, np.uint8)).convert(mode).save(path)


def folder(d: Path, classes=("a", "b"), n=5) -> Path:
    root = d / "imgs"
    for c in classes:
        for i in range(n):
            png(root / c / f"{i}.png")
    return root


def with_file(name: str, content: bytes):
    def make(d: Path) -> None:
        (folder(d) / "a" / name).write_bytes(content)
    return make


def truncated_png(d: Path) -> None:
    root = folder(d)
    raw = (root / "a" / "0.png").read_bytes()
    (root / "a" / "0.png").write_bytes(raw[:len(raw) // 2])


def bomb_png(d: Path) -> None:
    # 200 million 1-bit pixels: a few KB compressed, over twice Pillow's MAX_IMAGE_PIXELS (89.5M): refused.
    Image.new("1", (20000, 10000)).save(folder(d) / "a" / "bomb.png")


def only_in_b(make_entry):
    """Class folder b holds nothing but the given entry (a link loop, a folder named like an image)."""
    def make(d: Path) -> None:
        root = folder(d, classes=("a",))
        (root / "b").mkdir()
        make_entry(root / "b")
    return make


def flat_images(d: Path) -> None:
    for i in range(4):
        png(d / "imgs" / f"{i}.png")


def idx_split_sizes(d: Path) -> None:
    mnist(d, sizes=(28, 32))


# --- the data cases --------------------------------------------------------------------------------------------

SHOW = ("data", "show")
OUT = ("--out", "{d}/samples.png")
MN = ("mnist", "--data-dir", "{d}/m", "--offline")
TRAIN = ("train", "conv3-4 > relu > fc10", "--out", "{d}/run", "--epochs", "1", "--quiet", "--threads", "1")

DATA_CASES = [
    # IDX (MNIST family)
    Case("idx-wrong-magic", SHOW + MN + OUT, ("train-images-idx3-ubyte.gz", "bad magic number 0x00000802"),
         lambda d: mnist(d, on("train-images-idx3-ubyte", lambda r: b"\x00\x00\x08\x02" + r[4:]))),
    Case("idx-not-unsigned-byte", SHOW + MN + OUT, ("t10k-labels-idx1-ubyte.gz", "bad magic number"),
         lambda d: mnist(d, on("t10k-labels-idx1-ubyte", lambda r: b"\x00\x00\x0d\x01" + r[4:]))),
    Case("idx-dims-claim-petabytes", SHOW + MN + OUT,
         ("train-images-idx3-ubyte.gz", "60,000x1,048,576x1,048,576", "PiB", "refused before reading"),
         lambda d: mnist(d, on("train-images-idx3-ubyte", lambda r: r[:4] + TERABYTE_DIMS + r[16:]))),
    Case("idx-dims-overflow-int64", SHOW + MN + OUT,
         ("train-images-idx3-ubyte.gz", "4,294,967,295x4,294,967,295x4,294,967,295", "refused before reading"),
         lambda d: mnist(d, on("train-images-idx3-ubyte", lambda r: r[:4] + b"\xff" * 12 + r[16:]))),
    Case("idx-truncated-payload", SHOW + MN + OUT, ("t10k-images-idx3-ubyte.gz", "truncated payload"),
         lambda d: mnist(d, on("t10k-images-idx3-ubyte", lambda r: r[:-100]))),
    Case("idx-truncated-header", SHOW + MN + OUT, ("train-labels-idx1-ubyte.gz", "truncated IDX header"),
         lambda d: mnist(d, on("train-labels-idx1-ubyte", lambda r: r[:6]))),
    Case("idx-empty-file", SHOW + MN + OUT, ("t10k-labels-idx1-ubyte", "truncated IDX header"),
         lambda d: mnist(d, on("t10k-labels-idx1-ubyte", lambda r: b""), gz=False)),
    Case("idx-trailing-bytes", SHOW + MN + OUT, ("train-images-idx3-ubyte.gz", "trailing bytes"),
         lambda d: mnist(d, on("train-images-idx3-ubyte", lambda r: r + b"\x00" * 7))),
    Case("idx-label-count-mismatch", SHOW + MN + OUT,
         ("train-images-idx3-ubyte.gz holds 40 images", "train-labels-idx1-ubyte.gz holds 39 labels"),
         lambda d: mnist(d, on("train-labels-idx1-ubyte", lambda r: idx(np.zeros(39, np.uint8), 0x801)))),
    Case("idx-label-out-of-range", SHOW + MN + OUT, ("train-labels-idx1-ubyte.gz", "label 200 out of range"),
         lambda d: mnist(d, on("train-labels-idx1-ubyte", lambda r: r[:8] + b"\xc8" + r[9:]))),
    Case("idx-gzip-cut-short", SHOW + MN + OUT, ("train-images-idx3-ubyte.gz", "cannot read"),
         lambda d: regzip_damaged(d, cut=True)),
    Case("idx-gzip-bad-crc", SHOW + MN + OUT, ("train-images-idx3-ubyte.gz", "cannot read", "CRC"),
         lambda d: regzip_damaged(d, cut=False)),
    Case("idx-train-test-sizes-differ", TRAIN + ("--data",) + MN, ("mnist: the test images are 1x32x32",
                                                                  "training images 1x28x28", "--image-size"),
         idx_split_sizes),
    # CIFAR binary
    Case("cifar-record-cut-short", SHOW + ("cifar10", "--data-dir", "{d}/c", "--offline") + OUT,
         ("test_batch.bin", "truncated payload", "3073-byte records"), lambda d: cifar(d, cut=100)),
    Case("cifar-empty-batch", SHOW + ("cifar10", "--data-dir", "{d}/c", "--offline") + OUT,
         ("data_batch_1.bin", "truncated payload"), lambda d: cifar(d, n=0)),
    Case("cifar10-label-out-of-range", SHOW + ("cifar10", "--data-dir", "{d}/c", "--offline") + OUT,
         ("label 11 out of range for 10 classes",), lambda d: cifar(d, label=11)),
    Case("cifar100-fine-label-out-of-range", SHOW + ("cifar100", "--data-dir", "{d}/c", "--offline") + OUT,
         ("label 250 out of range for 100 classes",), lambda d: cifar(d, "cifar100", label=250)),
    # .npz
    Case("npz-missing-x", SHOW + ("{d}/nokey.npz",) + OUT, ("nokey.npz", "missing array 'x'", "images, y"),
         npz("nokey.npz", images=X, y=Y)),
    Case("npz-missing-y", SHOW + ("{d}/noy.npz",) + OUT, ("noy.npz", "missing array 'y'"), npz("noy.npz", x=X)),
    Case("npz-object-array-needs-pickle", SHOW + ("{d}/obj.npz",) + OUT, ("obj.npz", "allow_pickle=False"),
         npz_object_payload),
    Case("npz-rank-2", SHOW + ("{d}/r2.npz",) + OUT, ("r2.npz", "x has shape (20, 64)"),
         npz("r2.npz", x=np.zeros((20, 64)), y=Y)),
    Case("npz-rank-5", SHOW + ("{d}/r5.npz",) + OUT, ("r5.npz", "x has shape (20, 1, 1, 8, 8)"),
         npz("r5.npz", x=np.zeros((20, 1, 1, 8, 8)), y=Y)),
    Case("npz-five-channels", SHOW + ("{d}/c5.npz",) + OUT, ("c5.npz", "5 channels", "expected 1 (grey), 3"),
         npz("c5.npz", x=np.zeros((20, 5, 8, 8), np.uint8), y=Y)),
    Case("npz-float-labels", SHOW + ("{d}/yf.npz",) + OUT, ("yf.npz", "non-negative integer class indices"),
         npz("yf.npz", x=X, y=Y * 1.0)),
    Case("npz-negative-labels", SHOW + ("{d}/yn.npz",) + OUT, ("yn.npz", "non-negative integer"),
         npz("yn.npz", x=X, y=Y - 1)),
    Case("npz-label-count-mismatch", SHOW + ("{d}/yc.npz",) + OUT, ("yc.npz", "x holds 20 images but y holds 19"),
         npz("yc.npz", x=X, y=Y[:19])),
    Case("npz-zero-bytes", SHOW + ("{d}/zero.npz",) + OUT, ("zero.npz", "cannot read .npz"),
         lambda d: (d / "zero.npz").write_bytes(b"")),
    Case("npz-not-a-zip", SHOW + ("{d}/junk.npz",) + OUT, ("junk.npz", "cannot read .npz"),
         lambda d: (d / "junk.npz").write_bytes(b"PK\x03\x04 garbage")),
    Case("npz-truncated", SHOW + ("{d}/cut.npz",) + OUT, ("cut.npz", "cannot read .npz"), npz_truncated),
    Case("npz-test-split-other-size", TRAIN + ("--data", "{d}/ts.npz"), ("1x9x9",),
         npz("ts.npz", x=X, y=Y, x_test=np.zeros((10, 9, 9), np.uint8), y_test=Y[:10])),
    Case("npz-single-class", TRAIN + ("--data", "{d}/one.npz"), ("one.npz", "a single class", "at least 2"),
         npz("one.npz", x=X, y=np.zeros(20, np.int64))),
    Case("npz-nan-pixels", SHOW + ("{d}/nan.npz",) + OUT, ("nan.npz", "non-finite"),
                     npz("nan.npz", x=np.full((20, 8, 8), np.nan, np.float32), y=Y)),
    Case("npz-inf-pixels", SHOW + ("{d}/inf.npz",) + OUT, ("inf.npz", "non-finite"),
                     npz("inf.npz", x=np.full((20, 8, 8), np.inf, np.float32), y=Y)),
    Case("npz-complex-pixels", SHOW + ("{d}/cx.npz",) + OUT, ("cx.npz", "real pixel values"),
                     npz("cx.npz", x=X.astype(np.complex64), y=Y)),
    Case("npz-labels-2d", SHOW + ("{d}/y2.npz",) + OUT, ("y2.npz", "y must be 1-D"),
                     npz("y2.npz", x=X, y=np.zeros((20, 1), np.int64))),
    Case("npz-no-images", SHOW + ("{d}/empty.npz",) + OUT, ("empty.npz", "no images"),
                     npz("empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))),
    Case("npz-label-implies-a-billion-classes", SHOW + ("{d}/big.npz",) + OUT,
                     ("big.npz", "1000000000"), npz("big.npz", x=X, y=np.r_[Y[:19], 10**9])),
    # images
    Case("image-truncated", SHOW + ("{d}/imgs",) + OUT, ("a/0.png", "undecodable image", "truncated"),
         truncated_png),
    Case("image-zero-bytes", SHOW + ("{d}/imgs",) + OUT, ("a/z.png", "undecodable image"), with_file("z.png", b"")),
    Case("image-unknown-format", SHOW + ("{d}/imgs",) + OUT, ("a/u.png", "cannot identify image file"),
         with_file("u.png", b"hello, this is text and not an image")),
    Case("image-decompression-bomb", SHOW + ("{d}/imgs",) + OUT,
         ("a/bomb.png", "DecompressionBombError", "200000000 pixels"), bomb_png),
    Case("image-symlink-loop-only", SHOW + ("{d}/imgs",) + OUT, ("imgs/b: empty class folder",),
         only_in_b(lambda b: os.symlink("l.png", b / "l.png"))),
    Case("image-directory-named-like-an-image", SHOW + ("{d}/imgs",) + OUT, ("imgs/b: empty class folder",),
         only_in_b(lambda b: (b / "d.png").mkdir())),
    Case("image-empty-class-folder", SHOW + ("{d}/imgs",) + OUT, ("imgs/b: empty class folder",),
         only_in_b(lambda b: None)),
    Case("image-no-class-folders", SHOW + ("{d}/imgs",) + OUT, ("imgs: no class sub-folders",), flat_images),
    Case("image-single-class", TRAIN + ("--data", "{d}/imgs"), ("imgs: a single class ('a')",),
         lambda d: folder(d, classes=("a",))),
    Case("data-path-missing", SHOW + ("{d}/nothere.npz",) + OUT, ("nothere.npz: no such folder or .npz file",)),
]


@pytest.mark.parametrize("case", params(DATA_CASES))
def test_bad_dataset_file_is_refused_in_one_line(case, tmp_path):
    run_case(case, tmp_path)
