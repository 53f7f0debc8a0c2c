"""`cnnlab data show` without --augment: no horizontal flips on grey data (digits, MNIST-like handwriting,
where a mirrored 3 is not a 3), flips only on colour images; the crop pads by 1/8 of the side."""

import subprocess
import sys

import numpy as np


def show(*argv):
    return subprocess.run([sys.executable, "-m", "cnnlab", "data", "show", *argv], capture_output=True, text=True,
                          timeout=120)


def augment_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("augment"))


def test_digits_are_not_flipped_by_default(tmp_path):
    proc = show("digits", "--out", str(tmp_path / "d.png"))
    assert proc.returncode == 0, proc.stderr
    assert augment_line(proc.stdout).split() == ["augment", "crop:4@1"]  # 32x32 digits: pad 32/8
    assert (tmp_path / "d.png").stat().st_size > 0


def test_colour_images_keep_the_flip(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), y=np.arange(40) % 2)
    proc = show(str(tmp_path / "rgb.npz"), "--out", str(tmp_path / "c.png"))
    assert proc.returncode == 0, proc.stderr
    assert augment_line(proc.stdout).split() == ["augment", "flip@0.5,crop:2@1"]
