"""Kill-and-resume soak: one training run is killed with SIGKILL at several random moments — in the middle of
a training step (between its forward pass and its optimizer step), in the middle of writing a checkpoint
file, in the middle of an evaluation, and at a random wall-clock time — and resumed after each. It must end
with bit-for-bit the weights (raw and EMA) and the per-epoch records of an uninterrupted run, and after every
kill its checkpoint pointer must name a complete pair that loads."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
# Dropout (the global torch RNG), random augmentation, EMA and mid-epoch checkpoints: everything a resume
# must restore exactly. 144 training images, batch 32: 5 steps an epoch, 15 in all.
NET = "conv3-8 > relu > maxpool2 > conv3-16 > relu > maxpool2 > dropout0.3 > fc32 > relu > fc10"
CFG = dict(model=NET, epochs=3, threads=1, quiet=True, limit_per_class=24, checkpoint_every=3, ema=True,
           ema_decay=0.9, augment="rotate:10,erase@0.5", image_size=16)

CHILD = r"""
import json, os, signal, sys, time
import torch
mode, k = sys.argv[2], int(sys.argv[3])
cfg = json.loads(sys.argv[4])
calls = {"n": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def count():
    calls["n"] += 1
    return calls["n"] == k

pause = 0.05 if mode == "wait" else 0.0  # slow enough that a random moment falls inside the run
hooks = {"step_end": [lambda t: time.sleep(pause)]}
if mode == "step":  # the k-th training forward pass: killed before its backward and optimizer step
    def arm(trainer):
        if not getattr(trainer, "_armed", False):
            trainer._armed = True
            trainer.model.register_forward_hook(lambda m, i, o: die() if m.training and count() else None)
    hooks["epoch_start"] = [arm]
elif mode in ("state", "weights"):  # the k-th write of that checkpoint file, killed when half of it is on disk
    if mode == "state":
        real = torch.save
        def slow(obj, f, *a, **kw):
            real(obj, f, *a, **kw)
            if count():
                with open(f, "r+b") as fh:
                    fh.truncate(os.path.getsize(f) // 2)
                die()
        torch.save = slow
    else:
        import safetensors.torch as st
        real = st.save_file
        def slow(tensors, filename, *a, **kw):
            real(tensors, filename, *a, **kw)
            if count():
                with open(filename, "r+b") as fh:
                    fh.truncate(os.path.getsize(filename) // 2)
                die()
        st.save_file = slow
elif mode == "eval":  # the k-th evaluation, killed after its first batch
    from cnnlab.train import trainer as tr
    real = tr.evaluate
    def evaluate(model, loader, autocast=None):
        if count():
            it = iter(loader)
            model(next(it)[0])
            die()
        return real(model, loader, autocast=autocast)
    tr.evaluate = evaluate
elif mode == "wait":  # say when training is under way; the parent kills at a random moment
    def ready(trainer):
        if not calls["n"]:
            calls["n"] = 1
            print("training", flush=True)
    hooks["step_end"].append(ready)
from cnnlab.train import train
if sys.argv[5] == "resume":
    train(resume=sys.argv[1], hooks=hooks)
else:
    train(cfg, out=sys.argv[1], hooks=hooks)
"""


def _child(out: Path, mode: str, k: int, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), mode, str(k), json.dumps(CFG),
                             "resume" if resume else "new"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _checkpoint_is_whole(run: Path) -> int:
    """The pointer's pair loads (no corrupt checkpoint after a kill); its global step (0: none yet)."""
    from cnnlab.train.checkpoint import latest_info, load_checkpoint

    info = latest_info(run)
    if info is None:
        return 0
    weights, state = load_checkpoint(run)
    assert state["global_step"] == info["global_step"] and any(k.startswith("ema.") for k in weights)
    return info["global_step"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path):
    rng = random.Random(int(os.environ.get("CNNLAB_SOAK_SEED", "15")))
    run = tmp_path / "run"
    # In this order each kill lands before the run could finish: 15 steps, a checkpoint every 3 and at each
    # epoch end, and at least three evaluations (the final test and validation scores) in any process.
    kills = [("step", rng.randint(2, 6)), (rng.choice(["state", "weights"]), rng.randint(1, 2)), ("wait", 0),
             ("eval", rng.randint(1, 3))]
    progress = []
    for i, (mode, k) in enumerate(kills):
        child = _child(run, mode, k, resume=i > 0)
        try:
            if mode == "wait":
                line = child.stdout.readline().strip()
                assert line == "training", child.stderr.read()
                time.sleep(rng.uniform(0.0, 0.4))
                child.send_signal(signal.SIGKILL)
            child.wait(timeout=600)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL, (mode, k, child.stderr.read())
        assert not (run / "result.json").exists()
        progress.append((mode, k, _checkpoint_is_whole(run)))
    final = _child(run, "none", 0, resume=True)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err

    from cnnlab.train import train

    train(CFG, out=str(tmp_path / "ref"))
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(run / name)), load_file(str(tmp_path / "ref" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), (name, progress)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    same = ("train_loss", "train_acc", "val_loss", "val_acc", "ema_val_acc", "lr")
    assert [{k: r[k] for k in same} for r in records] == [{k: r[k] for k in same} for r in reference]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # leftovers removed on resume
    assert json.loads((run / "result.json").read_text())["test_accuracy"] == \
        json.loads((tmp_path / "ref" / "result.json").read_text())["test_accuracy"]
