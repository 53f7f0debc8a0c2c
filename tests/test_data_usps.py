"""USPS as a named dataset and the LIBSVM reader behind it.

The files are generated here in the LIBSVM format torchvision's USPS reader documents (label 1..10, 256
INDEX:VALUE pairs in [-1, 1]) and served from a local HTTP server; the expected pixels come from
torchvision's conversion ((v + 1) / 2 * 255) and the real shared copy (../shared/data/usps.npz), never
from cnnlab's own reader."""

from __future__ import annotations

import bz2
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from local_http import serve

from cnnlab.data import load_dataset
from cnnlab.data.libsvm import read_libsvm, read_usps
from cnnlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CNNLAB_SHARED", ROOT.parent / "shared"))
SHARED_USPS = SHARED / "data" / "usps.npz"


def libsvm_usps(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Images (N×16×16 uint8) and labels 0..9 as the bzip2'ed LIBSVM text the LIBSVM page serves."""
    lines = []
    for img, label in zip(images.reshape(len(images), -1), labels):
        values = img.astype(np.float64) / 255.0 * 2.0 - 1.0
        lines.append(f"{int(label) + 1} " + " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(values)))
    return bz2.compress(("\n".join(lines) + "\n").encode())


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 16, 16), dtype=np.uint8), np.arange(n) % 10


@pytest.fixture
def server():
    with serve() as served:
        yield served


def test_libsvm_sparse_lines_comments_and_tabs(tmp_path):
    p = tmp_path / "small.txt"
    p.write_text("# a comment line\n2 1:0.5 3:-1\n\n1\t2:0.25   4:1e-1  # trailing comment\n3\n")
    x, y = read_libsvm(p)
    np.testing.assert_array_equal(y, [2, 1, 3])
    np.testing.assert_allclose(x, [[0.5, 0, -1, 0], [0, 0.25, 0, 0.1], [0, 0, 0, 0]])
    assert read_libsvm(p, n_features=6)[0].shape == (3, 6)


@pytest.mark.parametrize("body, message", [
    ("1 1:0.5\n2 3 1:0.5\n", "line 2: '3' is not INDEX:VALUE"),
    ("1 1:0.5 2:0.1:7\n", "line 1: '2:0.1:7' is not INDEX:VALUE"),
    ("1 1:0.5\nx 1:0.5\n", "line 2: label 'x' is not a number"),
    ("1 0:0.5\n", "line 1: feature index 0 out of range"),
    ("1 1.5:0.5\n", "line 1: '1.5:0.5' is not INDEX:VALUE"),
    ("1 1:abc\n", "line 1: '1:abc' is not INDEX:VALUE"),
    ("1 1:0.5 3: 4:1\n", "line 1: '3:' is not INDEX:VALUE"),
    ("1 5 2:3:7\n", "line 1: '5' is not INDEX:VALUE"),  # the stray colon and the missing one cancel out
    ("\n# only a comment\n", "no samples"),
])
def test_libsvm_malformed_names_file_and_line(tmp_path, body, message):
    p = tmp_path / "bad.txt"
    p.write_text(body)
    with pytest.raises(DataError) as err:
        read_libsvm(p)
    assert str(p) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_libsvm_index_beyond_n_features(tmp_path):
    p = tmp_path / "wide.txt"
    p.write_text("1 1:0.5 257:0.1\n")
    with pytest.raises(DataError, match="line 1: feature index 257 out of range"):
        read_libsvm(p, n_features=256)


def test_usps_conversion_matches_torchvision_rule(tmp_path):
    """Labels 1..10 → 0..9; pixels by torchvision's ((v + 1) / 2 * 255), rounded rather than truncated."""
    values = np.linspace(-1, 1, 256)
    p = tmp_path / "usps"
    p.write_text("10 " + " ".join(f"{i + 1}:{float(v)!r}" for i, v in enumerate(values)) + "\n1 1:-1 256:1\n")
    images, labels = read_usps(p)
    np.testing.assert_array_equal(labels, [9, 0])
    torchvision_rule = ((values.astype(np.float32) + 1) / 2 * 255).astype(np.uint8)  # truncates
    diff = images[0].ravel().astype(int) - torchvision_rule.astype(int)
    assert set(np.unique(diff)) <= {0, 1} and images.shape == (2, 16, 16)
    # an omitted pixel is 0 in LIBSVM, i.e. the middle grey (127.5 → 128), not black
    assert images[1, 0, 0] == 0 and images[1, 15, 15] == 255 and images[1, 8, 8] == 128


@pytest.mark.parametrize("line, message", [("11 1:0.5", "label 11"), ("0 1:0.5", "label 0"),
                                           ("3 5:1.5", "pixel outside")])
def test_usps_rejects_what_usps_cannot_hold(tmp_path, line, message):
    p = tmp_path / "usps"
    p.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_usps(p)


def test_corrupt_bz2_is_one_line(tmp_path):
    p = tmp_path / "usps.bz2"
    p.write_bytes(b"BZh9" + os.urandom(200))
    with pytest.raises(DataError, match=f"{p}: cannot read") as err:
        read_usps(p)
    assert "\n" not in str(err.value)


def test_usps_download_from_local_mirror(server, tmp_path, monkeypatch):
    """The official split from the first working mirror, checksummed, cached, then usable offline."""
    base, h = server
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    xtr, ytr = _digits(60, 0)
    xte, yte = _digits(20, 1)
    sums = {}
    for name, (x, y) in (("usps.bz2", (xtr, ytr)), ("usps.t.bz2", (xte, yte))):
        h.files["mirror/" + name] = body = libsvm_usps(x, y)
        sums[name] = hashlib.md5(body).hexdigest()
    ds = load_dataset("usps", mirrors=[base + "gone/", base + "mirror/"], checksums=sums)
    assert h.log[:2] == ["gone/usps.bz2", "mirror/usps.bz2"]
    assert len(ds.test) == 20 and len(ds.train) + len(ds.val) == 60  # the official test split stays the test split
    np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), xte)
    np.testing.assert_array_equal(ds.test.labels.numpy(), yte)
    assert ds.classes == [str(i) for i in range(10)] and ds.info["native_size"] == [16, 16]
    assert sorted(p.name for p in (tmp_path / "home" / "usps").iterdir()) == ["usps.bz2", "usps.t.bz2"]
    served = len(h.log)
    again = load_dataset("usps", offline=True, checksums=sums, image_size=32)
    assert len(h.log) == served and again.train.image_shape == (1, 32, 32)


def test_usps_official_checksum_is_enforced(server, tmp_path, monkeypatch):
    """Without an override, the MD5s torchvision lists are checked: a different file is refused, not kept."""
    base, h = server
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    h.files["m/usps.bz2"] = libsvm_usps(*_digits(10, 0))
    with pytest.raises(DataError, match="usps.bz2: checksum mismatch.*ec16c51db3855ca6c91edd34d0e9b197"):
        load_dataset("usps", mirrors=[base + "m/"])
    assert not list((tmp_path / "home" / "usps").iterdir())


def test_usps_data_dir_used_as_is(tmp_path):
    """--data-dir with the decompressed files (as `bunzip2` leaves them) needs no network."""
    (tmp_path / "usps").write_bytes(bz2.decompress(libsvm_usps(*_digits(30, 2))))
    (tmp_path / "usps.t").write_bytes(bz2.decompress(libsvm_usps(*_digits(10, 3))))
    ds = load_dataset("usps", data_dir=tmp_path, offline=True)
    assert len(ds.test) == 10 and len(ds.train) + len(ds.val) == 30


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_usps_offline_and_corrupt_file_are_one_line(tmp_path):
    proc = _cli("data", "show", "usps", "--offline", "--out", str(tmp_path / "s.png"),
                env={"CNNLAB_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "usps.bz2 is missing and --offline forbids" in proc.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "usps").write_text("1 1:0.5\n2 oops\n")
    (tmp_path / "d" / "usps.t").write_text("1 1:0.5\n")
    proc = _cli("data", "show", "usps", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "s.png"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"{tmp_path / 'd' / 'usps'} line 2: 'oops' is not INDEX:VALUE" in proc.stderr
    assert not (tmp_path / "s.png").exists()


needs_shared = pytest.mark.skipif(not SHARED_USPS.is_file(),
                                  reason=f"the shared USPS copy is not at {SHARED_USPS} (set CNNLAB_SHARED)")


@needs_shared
def test_shared_usps_npz_keeps_the_official_split():
    ds = load_dataset(str(SHARED_USPS))
    assert len(ds.test) == 2007 and len(ds.train) + len(ds.val) == 7291
    assert ds.classes == [str(i) for i in range(10)] and ds.train.image_shape == (1, 16, 16)
    with np.load(SHARED_USPS) as raw:
        np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), raw["x_test"])
        np.testing.assert_array_equal(np.bincount(raw["y"]), [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644])


@needs_shared
def test_real_usps_images_round_trip_through_libsvm(tmp_path):
    """Real USPS digits written as the LIBSVM page writes them read back pixel for pixel."""
    with np.load(SHARED_USPS) as raw:
        x, y = raw["x_test"][:300], raw["y_test"][:300]
    (tmp_path / "usps.t.bz2").write_bytes(libsvm_usps(x, y))
    images, labels = read_usps(tmp_path / "usps.t.bz2")
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
