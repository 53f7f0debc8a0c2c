"""Time to accuracy as a first-class measure (--target-accuracy, --eval-every) and the chance-level warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.train import train

ROOT = Path(__file__).resolve().parents[1]


def test_target_accuracy_stops_the_run_and_is_recorded(tmp_path):
    seen = []
    r = train(epochs=10, threads=1, quiet=True, target_accuracy=0.9, out=str(tmp_path / "t"),
              hooks={"epoch_end": [lambda t, rec: seen.append(rec["val_acc"])]})
    first = next(i for i, v in enumerate(seen) if v >= 0.9) + 1  # the first epoch at or above the target
    assert r.epochs == first < 10
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    assert result["reached"] is True and result["epochs_to_target"] == first
    assert 0 < result["seconds_to_target"] <= result["wall_seconds"]
    assert result["test_count"] > 0 and 0 <= result["test_accuracy"] <= 1  # still scored at the end


def test_eval_every_stops_mid_epoch(tmp_path):
    r = train(epochs=10, batch_size=32, threads=1, quiet=True, target_accuracy=0.8, eval_every=5,
              out=str(tmp_path / "m"))
    epochs = r.summary["epochs_to_target"]
    assert r.summary["reached"] and epochs != int(epochs)  # stopped inside an epoch (34 steps each)
    assert round(epochs * 34) % 5 == 0


def test_an_unreached_target_says_so(tmp_path):
    r = train(epochs=1, threads=1, quiet=True, target_accuracy=1.0, limit_per_class=5, out=str(tmp_path / "u"))
    assert r.summary["reached"] is False and r.summary["seconds_to_target"] is None and r.epochs == 1


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=240)


def test_a_run_stuck_at_chance_level_says_so_in_one_line(tmp_path):
    # Deliberately broken: a weight decay this strong pins every weight at zero, so the net cannot learn.
    broken = _cli("train", "--epochs", "2", "--threads", "1", "--quiet", "--weight-decay", "5",
                  "--out", tmp_path / "broken")
    assert broken.returncode == 0, broken.stderr
    notes = [line for line in broken.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and "chance level" in notes[0] and "did not learn" in notes[0]
    assert "chance level" in json.loads((tmp_path / "broken" / "result.json").read_text())["warning"]
    healthy = _cli("train", "--epochs", "2", "--threads", "1", "--quiet", "--out", tmp_path / "ok")
    assert healthy.returncode == 0 and "chance" not in healthy.stderr


def test_collapse_back_to_chance_is_told_apart_from_never_learning():
    from cnnlab.train.run import chance_level_note

    assert "collapsed" in chance_level_note([{"val_acc": 0.9}, {"val_acc": 0.1}], 10)
    assert "did not learn" in chance_level_note([{"val_acc": 0.11}, {"val_acc": 0.1}], 10)
    assert chance_level_note([{"val_acc": 0.5}], 10) == ""


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
def test_target_accuracy_is_validated_when_parsed(tmp_path, value):
    proc = _cli("train", "--target-accuracy", value, "--out", tmp_path / "x")
    assert proc.returncode == 2 and "target-accuracy" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_valley_rule_matches_fastais_worked_example():
    from cnnlab.train.lr_range import valley

    # Falling for 10 points, then rising: the longest decreasing run ends at index 9 with length 10, so
    # fastai's start = 9 - 10 = -1, span 10, index -1 + int(10/3) + int(10/3/2) = -1 + 3 + 1 = 3.
    losses = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 4, 8]
    lrs = [10.0 ** (k - 6) for k in range(len(losses))]
    assert valley(lrs, losses) == lrs[3]
    # A noisy dip at the start (the trap the steepest-descent rule falls into) does not move it.
    assert valley(lrs, [10, 10.5] + losses[1:12]) == lrs[4]


def test_lr_auto_runs_the_range_test_and_saves_the_value(tmp_path):
    import warnings

    import yaml

    from cnnlab.errors import CnnlabWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train(epochs=1, threads=1, quiet=True, lr="auto", limit_per_class=10, out=str(tmp_path / "a"))
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["lr"]
    assert isinstance(saved, float) and 1e-6 < saved < 10 and r.epochs == 1
    assert any(issubclass(w.category, CnnlabWarning) and f"{saved:.3g}" in str(w.message) for w in caught)
