"""Exact resume after a SIGKILL mid-epoch, Ctrl-C saving a checkpoint, and torchrun data parallelism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.train import train
from cnnlab.train.checkpoint import latest_info

CFG = dict(epochs=3, threads=1, quiet=True, checkpoint_every=5, ema=True, ema_decay=0.9, augment="rotate:10")
ROOT = Path(__file__).resolve().parents[1]

# The child trains slowly (a step_end hook sleeps) so that the parent can kill it mid-epoch.
CHILD = """
import sys, time
from cnnlab.train import train
train({cfg!r}, out=sys.argv[1], hooks={{"step_end": [lambda t: time.sleep(0.03)]}})
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(cfg=CFG), str(killed)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            info = latest_info(killed) if (killed / "checkpoints").is_dir() else None
            if info and info["epoch"] == 1 and info["step"] > 0:  # a checkpoint in the middle of epoch 2
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.005)
        else:
            pytest.fail("no mid-epoch checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "result.json").exists()
    resumed = train(resume=killed)
    reference = train(CFG, out=str(tmp_path / "reference"))
    assert resumed.epochs == reference.epochs == 3
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(killed / name)), load_file(str(tmp_path / "reference" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["train_loss"] for r in lines] == [r["train_loss"] for r in ref]  # partial-epoch sums restored


def test_ctrl_c_saves_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "int"

    def interrupt(trainer):
        if trainer.global_step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(epochs=2, threads=1, quiet=True, out=str(out), hooks={"step_end": [interrupt]})
    info = latest_info(out)
    assert info["global_step"] == 7 and info["epoch"] == 0 and info["step"] == 7
    resumed = train(resume=out)
    reference = train(epochs=2, threads=1, quiet=True, out=str(tmp_path / "ref"))
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_accuracy == reference.test_accuracy


# Each torchrun rank trains through the same API the CLI calls, then reports its final weights' hash and
# the metrics it saw (all-reduced, so every rank reports the totals).
RANK_REPORT = """
import hashlib, json, os, sys
from cnnlab.train import train
r = train(epochs=1, quiet=True, out=sys.argv[1])
h = hashlib.sha256()
for k, v in sorted(r.model.state_dict().items()):
    h.update(k.encode())
    h.update(v.detach().cpu().contiguous().numpy().tobytes())
rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as fh:
    json.dump({"sha256": h.hexdigest(), **r.summary}, fh)
"""


@pytest.mark.slow
def test_torchrun_two_ranks_identical_weights_and_exact_eval_counts(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    script, reports, out = tmp_path / "rank_report.py", tmp_path / "reports", tmp_path / "ddp"
    script.write_text(RANK_REPORT)
    reports.mkdir()
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(out), str(reports)],
                          env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["sha256"] == r1["sha256"]  # DDP kept the replicas identical
    assert r0["world_size"] == 2
    from cnnlab.data import load_dataset

    ds = load_dataset("digits")
    assert r0["val_count"] == r1["val_count"] == len(ds.val)  # each sample exactly once over both ranks
    assert r0["test_count"] == r1["test_count"] == len(ds.test)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["val_count"] == len(ds.val)
    assert json.loads((out / "result.json").read_text())["test_count"] == len(ds.test)
    assert len(list((out / "checkpoints").iterdir())) == 3  # one weights/state pair + latest.json
