"""Augmentation specs are checked when parsed: every op's arguments of the wrong kind (a range where a
number is expected, or the reverse) and out-of-range values are one-line errors naming the token; the values
the rules accept run on a real batch; and `cnnlab train --augment BAD` stops before its run folder exists."""

import subprocess
import sys

import pytest
import torch

from cnnlab.data import build_augmentation, parse_spec
from cnnlab.errors import ConfigError

# (token, what the message must say). Per op: one argument of the wrong kind, then values out of range.
WRONG_KIND = [
    ("flip:2", "flip takes 0..0 argument(s)"),
    ("crop:2-4", "got '2-4' (a range)"),
    ("scale:0.5", "got '0.5' (a single number)"),
    ("rrc:0.5", "got '0.5' (a single number)"),
    ("rotate:10-20", "got '10-20' (a range)"),
    ("translate:0.1-0.2", "got '0.1-0.2' (a range)"),
    ("shear:5-10", "got '5-10' (a range)"),
    ("stretch:0.1-0.2", "got '0.1-0.2' (a range)"),
    ("lens:0.1-0.2", "got '0.1-0.2' (a range)"),
    ("jitter:0.1:0.1-0.2", "got '0.1-0.2' (a range)"),
    ("pca:0.1-0.2", "got '0.1-0.2' (a range)"),
    ("erase:0.3", "got '0.3' (a single number)"),
]
OUT_OF_RANGE = [
    ("flip@1.5", "probability must be in [0, 1]"),
    ("crop:0", "an integer in [1, 256]"), ("crop:2.5", "an integer in [1, 256]"), ("crop:300", "in [1, 256]"),
    ("scale:100-200", "short-side lengths >= 224"), ("scale:0.5-300", "not a mix"), ("scale:0-0.5", "(0, ∞)"),
    ("rrc:0.5-2", "in (0, 1]"), ("rrc:0-0.5", "in (0, 1]"),
    ("rotate:200", "in [0, 180]"),
    ("translate:1.5", "in [0, 1]"),
    ("shear:90", "in [0, 90)"),
    ("stretch:1", "in [0, 1)"),
    ("lens:2", "in [0, 1]"),
    ("jitter:0.2:1.5", "CONTRAST, a number in [0, 1]"), ("jitter:0.1:0.1:0.1:0.1", "jitter takes 1..3"),
    ("pca:2", "in [0, 1]"),
    ("erase:0.2-1.5", "in (0, 1]"), ("erase:0.4-0.2", "lo > hi"),
    ("rotate:nan", "finite number"), ("rotate:-5", "finite number >= 0"),
]


@pytest.mark.parametrize("token, needle", WRONG_KIND + OUT_OF_RANGE)
def test_bad_argument_is_one_line_naming_the_token(token, needle):
    with pytest.raises(ConfigError) as err:
        parse_spec(f"flip,{token}")
    msg = str(err.value)
    assert msg.startswith(f"bad augmentation token {token!r}: ") and needle in msg and "\n" not in msg


# The edges of every op's accepted range, applied to a real batch: what the parser lets through must run.
EDGES = ("flip@1,crop:1,crop:256,scale:224-480,scale:0.01-1,rrc:0.001-1,rotate:180,translate:1,shear:89.9,"
         "stretch:0.99,lens:1,jitter:1:1:1,jitter:0,pca:1,erase:1-1@1,erase:0.001-0.01")


@pytest.mark.parametrize("token", EDGES.split(","))
def test_every_accepted_edge_value_runs_on_a_batch(token):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    out = build_augmentation(token, _PcaData(x))(x, gen)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    assert float(out.min()) >= 0 and float(out.max()) <= 255


class _PcaData:
    """The one thing `pca` needs from a dataset: its training images."""

    def __init__(self, images):
        self.train = type("Split", (), {"images": images})()


def test_train_with_a_bad_spec_stops_before_writing_its_run_folder(tmp_path):
    out = tmp_path / "run"
    for spec in ("rotate:10-20", "crop:2-4", "erase:0.3"):
        proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--augment", spec, "--out", str(out),
                               "--epochs", "1", "--quiet"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith(f"cnnlab train: error: bad augmentation token '{spec}'")
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not out.exists()
    config = tmp_path / "run.yaml"
    config.write_text("augment: [flip, 'scale:0.5']\n")  # the config file's list form is checked the same way
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'scale:0.5'" in proc.stderr and not out.exists()
