"""Resident memory of training runs, each in a fresh process: peak RSS of the main job (LeNet-5 on the
digits) and, in --full, of ResNet-18 on 2,000 synthetic 3×32×32 images; and the RSS growth from the end
of epoch 2 to the last epoch (a leak shows as steady growth; the goal is none beyond noise)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from .harness import ROOT, Check, Mode, Result

NAME = "memory"


def _child(kind: str, out: str, threads: int, epochs: int) -> None:
    """Train once in this (fresh) process, recording the current RSS after each epoch."""
    import numpy as np

    from cnnlab.train import train
    from cnnlab.utils.io import write_json_atomic

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    per_epoch: list[float] = []
    hooks = {"epoch_end": [lambda trainer, record: per_epoch.append(rss_mb())]}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        if kind == "lenet5":
            train(quiet=True, out=f"{tmp}/run", hooks=hooks, threads=threads, epochs=epochs)
        else:
            g = np.random.default_rng(0)
            data = Path(tmp) / "synthetic32.npz"
            np.savez(data, x=g.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8), y=g.integers(0, 10, 2000))
            train(model="resnet18", data=str(data), epochs=epochs, batch_size=64, quiet=True, out=f"{tmp}/run",
                  hooks=hooks, threads=threads, model_opts={"stem": "cifar"})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json_atomic(out, {"peak_rss_mb": round(peak, 1), "rss_per_epoch_mb": [round(v, 1) for v in per_epoch],
                            "growth_epoch2_to_last_mb": round(per_epoch[-1] - per_epoch[1], 1)})


def run(mode: Mode) -> Result:
    kinds = {"lenet5": mode.pick(20, 20, smoke=3)}
    if mode.full:
        kinds["resnet18"] = 5
    figures: dict = {"threads": mode.threads}
    rows, checks = [], []
    for kind, epochs in kinds.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rss.json"
            proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", kind, str(out),
                                   str(mode.threads), str(epochs)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                raise RuntimeError(f"memory child {kind} failed: {proc.stderr.strip()[-500:]}")
            f = figures[kind] = {"epochs": epochs, **json.loads(out.read_text())}
        what = "LeNet-5 on the digits (the main job)" if kind == "lenet5" else "ResNet-18 on 2,000 × 3×32×32"
        growth = f["growth_epoch2_to_last_mb"]
        rows.append((f"peak RSS, {what}, {epochs} epochs",
                     f"{f['peak_rss_mb']:,.0f} MB; growth from epoch 2 to the last {growth:+.1f} MB"))
        checks.append(Check(f"{kind}: RSS growth from epoch 2 to the last (MB)", f["growth_epoch2_to_last_mb"],
                            "<=", 20.0, "a leak grows every epoch"))
    return Result(NAME, "Memory", figures, rows, checks)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=4, metavar=("KIND", "OUT", "THREADS", "EPOCHS"), required=True)
    a = ap.parse_args()
    _child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]))
