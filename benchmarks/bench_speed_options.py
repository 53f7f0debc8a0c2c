"""Speed options of `cnnlab train` as ratios to plain fp32 in one run: channels-last, bf16 autocast,
both, and torch.compile — on LeNet-5 (1×32×32) and ResNet-18 with the CIFAR stem (3×32×32), plus the
test accuracy of the main job under bf16 (an accuracy check for the fast path).

Each variant times the same train steps (forward, backward, SGD step) on one fixed batch after warm-up,
interleaved over rounds, best round kept. Not a timed test: it reports what it measures.

Usage: .venv/bin/python benchmarks/bench_speed_options.py [--steps N] [--rounds R] [--compile] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnlab.models import build_model  # noqa: E402
from cnnlab.utils.io import write_json_atomic  # noqa: E402

VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last")


def _step_fn(model_name: str, variant: str, batch: int, opts: dict):
    """A closure running one training step of a fresh model in the given variant."""
    shape = (1, 32, 32) if model_name == "lenet5" else (3, 32, 32)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=shape[0], input_size=shape[1:], **opts)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    channels_last = "channels_last" in variant
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in variant else contextlib.nullcontext

    def step() -> None:
        with amp():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_variants(model_name: str, variants: tuple[str, ...], batch: int, steps: int, rounds: int,
                  opts: dict) -> dict[str, float]:
    """Best-of-rounds seconds per step for each variant, rounds interleaved so all see the same load."""
    fns = {v: _step_fn(model_name, v, batch, opts) for v in variants}
    for fn in fns.values():  # warm-up (and compilation)
        for _ in range(3):
            fn()
    best = {v: float("inf") for v in variants}
    for _ in range(rounds):
        for v, fn in fns.items():
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            best[v] = min(best[v], (time.perf_counter() - t) / steps)
    return best


def bf16_accuracy() -> dict:
    """Test accuracy of the main job (LeNet-5 on the digits) in fp32 and under bf16 autocast."""
    from cnnlab.train import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("none", "bf16"):
            result = train(amp=amp, quiet=True, out=f"{tmp}/{amp}", threads=torch.get_num_threads())
            out[amp] = {"test_accuracy": result.test_accuracy, "seconds": round(result.seconds, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to warm up)")
    ap.add_argument("--json", help="also write results as JSON here")
    args = ap.parse_args()
    variants = VARIANTS + (("compile",) if args.compile else ())
    results = {"threads": torch.get_num_threads(), "models": {}}
    for name, batch, opts in (("lenet5", 64, {}), ("resnet18", 64, {"stem": "cifar"})):
        secs = time_variants(name, variants, batch, args.steps, args.rounds, opts)
        results["models"][name] = {v: {"ms_per_step": round(1000 * s, 2), "speedup": round(secs["fp32"] / s, 2)}
                                   for v, s in secs.items()}
        print(f"\n{name} (batch {batch}, {results['threads']} threads): ms per train step, speed-up vs fp32")
        for v, r in results["models"][name].items():
            print(f"  {v:<20} {r['ms_per_step']:>9.2f} ms   {r['speedup']:>5.2f}×")
    results["bf16_accuracy"] = bf16_accuracy()
    acc = results["bf16_accuracy"]
    print(f"\nmain job test accuracy: fp32 {acc['none']['test_accuracy']:.4f}, "
          f"bf16 autocast {acc['bf16']['test_accuracy']:.4f}")
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
