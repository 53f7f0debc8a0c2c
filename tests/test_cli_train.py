"""`cnnlab train` / `cnnlab lr-find` as a user sees them: help for every option, one-line errors with exit 2
and nothing written, a real subprocess without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cnnlab.cli import main


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_train_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--optimizer", "--schedule", "--weight-decay", "--l1", "--ema",
                 "--snapshots", "--early-stopping", "--clip-grad", "--resume", "--checkpoint-every", "--amp",
                 "--model-opt", "--augment", "--drop-path-rate", "--overwrite", "torchrun"):
        assert flag in text, flag


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    _one_line_error(capsys, ["train", "nosuchnet", "--out", out], "unknown model", "lenet5")
    _one_line_error(capsys, ["train", "--data", "nosuchdata", "--out", out], "unknown data", "digits")
    _one_line_error(capsys, ["train", "--epochs", "0", "--out", out], "epochs")
    _one_line_error(capsys, ["train", "--batch-size", "-3", "--out", out], "batch-size")
    _one_line_error(capsys, ["train", "--dropout", "0.3", "--out", out], "dropout")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nbogus_key: 3\n")
    _one_line_error(capsys, ["train", "--config", str(cfg), "--out", out], "bogus_key", "c.yaml")
    assert not (tmp_path / "run").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    _one_line_error(capsys, ["train", "--out", str(busy)], "not empty", "--overwrite")
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "nowhere")], "no such run directory")


def test_cli_train_overwrite_and_config_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("x")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epochs: 1\nthreads: 1\nquiet: true\nmodel_opts: {act: relu}\n")
    assert main(["train", "--config", str(cfg), "--out", str(out), "--overwrite", "--seed", "3"]) == 0
    assert "run written to" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["seed"] == 3 and saved["epochs"] == 1 and saved["model_options"] == {"act": "relu"}


def test_subprocess_epochs_zero_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--epochs", "0", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "epochs" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_lr_find_suggests_and_plots_and_leaves_model_untouched(tmp_path, capsys):
    import torch
    from torch import nn

    from cnnlab.data import BatchLoader, load_dataset
    from cnnlab.models import build_model
    from cnnlab.train.lr_range import range_test

    png = tmp_path / "lr.png"
    assert main(["lr-find", "--steps", "60", "--threads", "1", "--plot", str(png)]) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ds = load_dataset("digits")
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = range_test(model, opt, BatchLoader(ds.train, 32, shuffle=True), nn.CrossEntropyLoss(), steps=40,
                     end_lr=1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not opt.state and opt.param_groups[0]["lr"] == 0.01
    assert 1e-7 <= res.steepest <= 1.0 and len(res.lrs) == len(res.smoothed)
    assert res.suggestion == res.min_over_10 and res.lrs[0] <= res.valley <= res.lrs[-1]
