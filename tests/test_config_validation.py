"""Numeric training options are checked when the configuration is validated, before any data or run folder:
no nan or inf anywhere, probabilities in [0, 1], decay factors at most 1, positive sizes, 64-bit seeds."""

import math
import subprocess
import sys
from dataclasses import fields

import pytest

from cnnlab.errors import ConfigError
from cnnlab.train.config import TrainConfig

FLOAT_FIELDS = [f.name for f in fields(TrainConfig) if str(f.type).startswith("float")]


def test_every_float_option_is_covered():
    # Guards the parametrisation below: a new float option is checked too, whatever its name.
    assert {"lr", "momentum", "weight_decay", "ema_decay", "dropout", "label_smoothing"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_refused(name, value):
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')} must be a finite number"):
        TrainConfig(**{name: value}).validate()


@pytest.mark.parametrize("changes, needle", [
    ({"momentum": 1.0}, "momentum must be in [0, 1)"),          # adam's beta1 = 1 is a ValueError in torch
    ({"gamma": 1.5}, "gamma is a decay factor"), ({"gamma": 0.0}, "gamma is a decay factor"),
    ({"exp_gamma": 2.0}, "exp-gamma is a decay factor"),
    ({"ema_decay": 1.0}, "ema-decay must be in (0, 1)"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"), ({"drop_path_rate": -0.1}, "drop-path-rate must be in [0, 1)"),
    ({"label_smoothing": 1.0}, "label-smoothing must be in [0, 1)"),
    ({"epochs": 0}, "epochs must be a positive integer"), ({"step_size": 0}, "step-size must be a positive"),
    ({"image_size": 0}, "image-size must be a positive"), ({"limit_per_class": 0}, "limit-per-class must be"),
    ({"plateau_patience": -1}, "plateau-patience must be >= 0"),
    ({"seed": -1}, "seed must be an integer in [0, 2**63 - 1]"), ({"seed": 2**63}, "seed must be an integer in"),
    ({"lr": "0.1"}, "lr must be a positive number, 'by-model' or 'auto', got '0.1'"),
    ({"epochs": 2.5}, "--epochs expects int"),
    ({"quiet": 1}, "--quiet expects bool"),
])
def test_out_of_range_values_are_refused(changes, needle):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**changes).validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_edges_that_are_allowed():
    TrainConfig(momentum=0.0, gamma=1.0, exp_gamma=1.0, dropout=0.0, seed=2**63 - 1, plateau_patience=0).validate()


@pytest.mark.parametrize("argv, needle", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--weight-decay=-inf"], "--weight-decay must be a finite number"),
    (["--seed", "-3"], "seed must be an integer"),
])
def test_cli_refuses_before_writing_anything(tmp_path, argv, needle):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", *argv, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not out.exists()
