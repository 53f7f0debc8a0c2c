"""`transfer-study`: the A/B experiment's runs do what Yosinski et al. describe — the first n stages copied from
the base model (bit for bit), kept frozen in AnB/BnB and trained in AnB+/BnB+, the rest freshly initialised —
finished runs are reused, and `--quick` on the digits prints the table and writes the plot."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.errors import ConfigError
from cnnlab.transfer.study import CONDITIONS, transfer_study

LENET_STAGE_KEYS = {1: ("features.0.",), 2: ("features.0.", "features.3."), 3: ("features.0.", "features.3.",
                                                                              "features.6.")}


def test_study_runs_copy_freeze_and_reuse(tmp_path):
    lines = []
    result = transfer_study("lenet5", "digits", classes_a=["0", "1", "2", "3", "4"], seeds=1, epochs=1,
                            per_class=5, out=tmp_path / "s", train_options={"threads": 1},
                            progress=lines.append)
    assert [row["n"] for row in result.rows] == [0, 1, 2, 3]
    assert len(result.runs) == 4 + 4 * 3 and sum("training" in line for line in lines) == 2 + 4 * 3
    base_a = load_file(str(tmp_path / "s/runs/seed-0/baseA/model.safetensors"))
    base_b = result.base[0]["B"]
    assert all(result.rows[0][c]["values"] == [base_b] for c in CONDITIONS)  # n = 0 is base B itself
    assert result.base[0]["classes_b"] == ["5", "6", "7", "8", "9"]
    for n, prefixes in LENET_STAGE_KEYS.items():
        frozen = load_file(str(tmp_path / f"s/runs/seed-0/AnB-{n}/model.safetensors"))
        tuned = load_file(str(tmp_path / f"s/runs/seed-0/AnB+-{n}/model.safetensors"))
        for key, value in base_a.items():
            copied = key.startswith(prefixes)
            if copied:
                assert torch.equal(frozen[key], value), (n, key)          # copied and kept frozen
                assert not torch.equal(tuned[key], value), (n, key)       # copied, then trained
            else:
                assert not torch.equal(frozen[key], value), (n, key)      # not copied: fresh, then trained
        init = json.loads((tmp_path / f"s/runs/seed-0/AnB-{n}/init.json").read_text())
        assert init["loaded"] == 2 * n  # each LeNet-5 stage: one conv's weight and bias
    # B has 5 training images per class
    cfg = json.loads((tmp_path / "s/runs/seed-0/baseB/config.json").read_text())
    assert cfg["split_sizes"]["train"] == 25 and cfg["classes"] == ["5", "6", "7", "8", "9"]
    assert result.plot.stat().st_size > 10_000
    saved = json.loads((tmp_path / "s/results.json").read_text())
    assert saved["rows"] == result.rows and "| 3 | stem,stage1,stage2 |" in result.table()
    # a second call reuses every finished run
    lines.clear()
    again = transfer_study("lenet5", "digits", classes_a=["0", "1", "2", "3", "4"], seeds=1, epochs=1,
                           per_class=5, out=tmp_path / "s", train_options={"threads": 1}, progress=lines.append)
    assert not any("training" in line for line in lines) and again.rows == result.rows


def test_study_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match="--classes-a: 'x' is not a class of digits"):
        transfer_study(classes_a=["x"], seeds=1, epochs=1, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="transfer-study sets epochs itself"):
        transfer_study(train_options={"epochs": 3}, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="--per-class must be positive"):
        transfer_study(per_class=0, out=tmp_path / "s")


@pytest.mark.slow
def test_quick_study_on_the_digits_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["transfer-study", "--quick", "--out", str(tmp_path / "q"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy on B, mean ± std over 3 seed(s) (lenet5, 8 epochs per run)" in out
    for cond in CONDITIONS:
        assert cond in out
    assert "stem,stage1,stage2" in out and (tmp_path / "q/transfer-study.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "q/results.json").read_text())["rows"]
    assert all(0.8 < row[c]["mean"] <= 1.0 for row in rows for c in CONDITIONS)
