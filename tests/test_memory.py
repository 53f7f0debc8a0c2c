"""Bounded memory: a long run (many epochs with EMA, hooks, the progress display and a checkpoint every step)
and repeated library calls in one process hold steady resident memory once warmed up. Measured in a fresh
child process from /proc/self/statm (resident pages) after a garbage collection, with a tolerance a real
leak exceeds: the model is ~1 MB, so keeping one copy of its weights per epoch would add ~30 MB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20

RSS = r"""
import gc, json, os, sys
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    gc.collect()
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE
"""

LONG_RUN = RSS + r"""
from cnnlab.train import train
samples, steps = [], []
net = "conv3-16 > relu > maxpool2 > fc256 > relu > fc10"  # 265,034 parameters, ~1 MB of weights
train(model=net, epochs=int(sys.argv[2]), lr=0.01, threads=1, quiet=False, limit_per_class=10, image_size=16, ema=True,
      ema_decay=0.9, augment="flip,rotate:10", checkpoint_every=1, out=sys.argv[1],
      hooks={"epoch_end": [lambda t, r: samples.append(rss())], "step_end": [lambda t: steps.append(t.global_step)]})
print(json.dumps(samples))
"""

REPEATED = RSS + r"""
import warnings
from cnnlab import summarize
from cnnlab.models import build_model
from cnnlab.runs import Run
from cnnlab.train import evaluate, train
from cnnlab.train.lr_range import LRFindResult, plot_curve
warnings.simplefilter("ignore")
out = {}
def measure(name, fn, times):
    series = []
    for _ in range(times):
        fn()
        series.append(rss())
    out[name] = series
run = train(epochs=1, threads=1, quiet=True, out=sys.argv[1] + "/run").run_dir  # all 1,797 digits: 360 to test
opened = Run.open(run)
loader = opened.loader("test")
lenet = opened.model()
curve = LRFindResult(lrs=[10 ** (i / 10 - 6) for i in range(60)], losses=[2.3 - i / 100 for i in range(60)],
                     smoothed=[2.3 - i / 100 for i in range(60)], steepest=1e-3, min_over_10=1e-4)
measure("summarize", lambda: summarize(build_model("resnet18"), (3, 64, 64)), 12)
measure("evaluate", lambda: evaluate(lenet, loader), 30)
measure("run.model", lambda: Run.open(run).model(), 30)
measure("plot", lambda: plot_curve(curve, sys.argv[1] + "/lr.png"), 15)
measure("train", lambda: train(epochs=1, threads=1, quiet=True, limit_per_class=8, out=sys.argv[1] + "/again",
                               overwrite=True), 6)
print(json.dumps(out))
"""


def _child(script: str, *args) -> object:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _growth(series: list[int], warmup: int) -> float:
    """MiB gained after the first `warmup` samples (the largest later sample against the warm level)."""
    return (max(series[warmup:]) - series[warmup - 1]) / MIB


@pytest.mark.slow
def test_a_long_run_holds_steady_memory(tmp_path):
    samples = _child(LONG_RUN, tmp_path / "run", 30)
    assert len(samples) == 30
    assert _growth(samples, 5) < 8, [round(s / MIB, 1) for s in samples]


@pytest.mark.slow
def test_repeated_library_calls_hold_steady_memory(tmp_path):
    series = _child(REPEATED, tmp_path)
    for name, samples in series.items():
        warmup = 3 if name in ("summarize", "train") else 5
        assert _growth(samples, warmup) < 8, (name, [round(s / MIB, 1) for s in samples])
