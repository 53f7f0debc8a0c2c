"""No input a user can give ends in a traceback: corrupt or odd files, impossible sizes and paths across
train, summary, compare, conv, data show and lr-find are one line naming the file or option, exit 2, and
nothing is written. Each case is a bad input found by probing the CLI (each failed with a traceback, a
wrong result or a hang before its fix).

The cases run through the real `cnnlab` entry point in ONE subprocess (a driver that calls
`cnnlab.cli.main` per command line, as `python -m cnnlab` does, and reports any exception that escapes it
as the traceback a user would see): one interpreter start instead of thirty."""

import json
import subprocess
from fractions import Fraction
import sys

import numpy as np
import pytest

LONG = "a" * 300  # a path component past the file system's 255 bytes: an OSError naming the path

DRIVER = r"""
import contextlib, io, json, resource, sys, traceback
# A regression that sizes something from a corrupt label (10**12 classes) fails with MemoryError here
# instead of exhausting a shared machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from cnnlab.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except BaseException:
            rc = "traceback"
            err.write(traceback.format_exc())
    results.append({"rc": rc, "err": err.getvalue(), "out": out.getvalue()})
print(json.dumps(results))
"""


def _files(root):
    """The bad inputs, written into `root`."""
    def npz(name, **arrays):
        np.savez(root / name, **arrays)

    img = np.zeros((40, 32, 32), np.uint8)
    labels = np.arange(40) % 2
    npz("bigy.npz", x=img, y=labels + 10**12)
    npz("empty.npz", x=np.zeros((0, 32, 32), np.uint8), y=np.zeros(0, int))
    npz("nan.npz", x=np.full((40, 32, 32), np.nan), y=labels)
    npz("complex.npz", x=img.astype(complex), y=labels)
    npz("int300.npz", x=np.full((40, 32, 32), 300, np.int64), y=labels)
    npz("testsize.npz", x=img, y=labels, x_test=np.zeros((5, 16, 16), np.uint8), y_test=np.arange(5) % 2)
    npz("y2d.npz", x=img, y=np.zeros((40, 2), int))
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81lr: 1")
    (root / "run").mkdir()
    (root / "run" / "config.json").write_text('{"model": "lenet5", "image_size": "abc"}')
    (root / "afile").write_text("a file, not a folder")
    (root / "k.npy").write_bytes(b"\x93NUMPYgarbage")
    (root / "k.txt").write_bytes(b"\xff\xfe\x00")


# (command line, what the one-line error must say). {d} is the folder of the bad inputs.
CASES = [
    (["train", "--data", "{d}/bigy.npz"], "bigy.npz: largest label 1000000000001"),
    (["train", "--data", "{d}/empty.npz"], "empty.npz: x holds no images"),
    (["train", "--data", "{d}/nan.npz"], "nan.npz: x holds non-finite pixel values"),
    (["train", "--data", "{d}/complex.npz"], "complex.npz: x must hold real pixel values"),
    (["train", "--data", "{d}/int300.npz"], "int300.npz: x pixel values must be in 0..255"),
    (["train", "--data", "{d}/testsize.npz"], "x_test images are 1x16x16 (CxHxW) but x's are 1x32x32"),
    (["train", "--data", "{d}/y2d.npz"], "y2d.npz: y must be 1-D"),
    (["train", "--config", "{d}/binary.yaml"], "binary.yaml: not a text (UTF-8) config file"),
    (["train", "--data", f"{{d}}/{LONG}.npz"], "File name too long"),
    (["summary", "{d}/run"], "run/config.json: image_size/in_channels/mean/std are malformed"),
    (["summary", ""], "MODEL is empty"),
    (["summary", "conv3-99999999999", "--input", "1x8x8"], "99999999999 is too large"),
    (["summary", f"{{d}}/{LONG}/x"], "File name too long"),
    (["compare", "lenet5", "lenet1", "--num-classes", "0"], "--num-classes must be positive"),
    (["data", "show", "digits", "--out", "{d}"], "is a folder; give a file path"),
    (["data", "show", "digits", "--out", "{d}/afile/x.png"], "afile is a file, not a folder"),
    (["data", "show", "digits", "--limit-per-class", "0", "--out", "{d}/x.png"], "limit-per-class must be"),
    (["data", "show", "digits", "--augment", "crop:2-4", "--out", "{d}/x.png"], "bad augmentation token"),
    (["lr-find", "--end-lr", "inf"], "finite learning rates 0 < start-lr < end-lr"),
    (["lr-find", "--plot", "{d}/afile/lr.png"], "--plot"),
    (["conv", "--input", "{d}/k.npy", "--kernel", "1"], "k.npy: not a readable .npy array"),
    (["conv", "--input", "{d}/k.txt", "--kernel", "1"], "k.txt: cannot read it as text"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    _files(root)
    argvs = [[a.replace("{d}", str(root)) for a in argv] + (["--out", str(root / f"out{i}")]
                                                           if argv[0] == "train" else [])
             for i, (argv, _) in enumerate(CASES)]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(CASES)), ids=[" ".join(argv)[:60] for argv, _ in CASES])
def test_bad_input_is_one_line_exit_2(results, index):
    root, res = results
    argv, needle = CASES[index]
    got = res[index]
    assert got["rc"] == 2, got["err"]
    assert needle in got["err"] and len(got["err"].strip().splitlines()) == 1, got["err"]
    assert got["err"].startswith(f"cnnlab {argv[0]}: error: ")
    assert not (root / f"out{index}").exists() and not (root / "x.png").exists()


def test_depthwise_demo_with_millions_of_channels_allocates_nothing():
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "compare", "--demo", "depthwise", "--out-channels",
                           "99999999999", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sep = json.loads(proc.stdout)["separable"]
    assert sep["conv_params"]["a"] == 64 * 3 * 3 * 99_999_999_999  # the demo's convs are bias-free
    assert Fraction(sep["predicted_fraction"]) == Fraction(1, 99_999_999_999) + Fraction(1, 9)
