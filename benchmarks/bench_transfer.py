"""Transfer learning's speed effects as ratios measured in one run, on ResNet-18 (3×64×64 inputs, 10 classes):

- training step (forward, backward, SGD step) with --freeze all-but-head / up-to:stage3 against full
  fine-tuning: frozen stages need no weight gradients, and below the lowest trainable stage no backward at all;
- feature extraction of an early layer (stage1) with cnnlab's capture hook, which stops the forward pass once
  the layer has run, against a hook that lets the whole network run (what a plain forward hook costs);
- a linear probe (Pipeline(StandardScaler, LogisticRegression), 5-fold CV over 6 C values) on 100×120
  features with one BLAS thread against the library's default thread count.

Each variant is timed over the same fixed batch after warm-up, rounds interleaved, best round kept. Not a timed
test: it reports what it measures.

Usage: .venv/bin/python benchmarks/bench_transfer.py [--batch N] [--steps N] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnlab.models import build_model  # noqa: E402
from cnnlab.transfer.features import layer_outputs  # noqa: E402
from cnnlab.transfer.freeze import StageFreezer  # noqa: E402
from cnnlab.utils.io import write_json_atomic  # noqa: E402

FREEZES = ("none", "up-to:stage3", "all-but-head")


def _train_step(freeze: str, batch: int):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, input_size=(64, 64))
    if freeze != "none":
        StageFreezer(model, freeze).set_epoch(0)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _extract(early_exit: bool, batch: int):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, input_size=(64, 64)).eval()
    module = model.get_stage("stage1").output
    loader = [(torch.randn(batch, 3, 64, 64), torch.zeros(batch, dtype=torch.long))]
    if early_exit:
        return lambda: layer_outputs(model, module, loader, "avg")
    store = []
    handle = module.register_forward_hook(lambda m, i, o: store.append(o.mean(dim=(2, 3))))

    @torch.inference_mode()
    def full() -> None:
        store.clear()
        model(loader[0][0])

    full.handle = handle
    return full


def _probe(blas_threads: int | None):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.0, (5, 120))
    x = np.concatenate([c + rng.normal(0, 1.0, (20, 120)) for c in centres])
    y = np.repeat(np.arange(5), 20)

    def fit() -> None:
        search = GridSearchCV(Pipeline([("s", StandardScaler()), ("c", LogisticRegression(max_iter=5000))]),
                              {"c__C": [1e-3, 1e-2, 1e-1, 1, 10, 100]}, cv=StratifiedKFold(5))
        if blas_threads is None:
            search.fit(x, y)
        else:
            with threadpool_limits(limits=blas_threads, user_api="blas"):
                search.fit(x, y)

    return fit


def best_times(fns: dict, steps: int, rounds: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = best_times({f: _train_step(f, args.batch) for f in FREEZES}, args.steps, args.rounds)
    extract = best_times({"early exit (cnnlab)": _extract(True, args.batch),
                          "whole forward": _extract(False, args.batch)}, args.steps, args.rounds)
    probe = best_times({"1 BLAS thread": _probe(1), "default BLAS threads": _probe(None)}, 1, args.rounds)
    print(f"ResNet-18, batch {args.batch} of 3x64x64, torch threads {torch.get_num_threads()}")
    print(f"{'training step':<34}{'ms':>9}{'speed-up':>10}")
    for name, t in train.items():
        print(f"  --freeze {name:<23}{t * 1e3:9.1f}{train['none'] / t:9.2f}x")
    print(f"{'features of stage1':<34}{'ms':>9}{'speed-up':>10}")
    for name, t in extract.items():
        print(f"  {name:<32}{t * 1e3:9.1f}{extract['whole forward'] / t:9.2f}x")
    print(f"{'probe: 100x120, 5-fold CV, 6 C':<34}{'ms':>9}{'speed-up':>10}")
    for name, t in probe.items():
        print(f"  {name:<32}{t * 1e3:9.1f}{probe['default BLAS threads'] / t:9.2f}x")
    if args.json:
        write_json_atomic(args.json, {"train_step_s": train, "extract_s": extract, "probe_s": probe,
                                      "batch": args.batch, "threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
