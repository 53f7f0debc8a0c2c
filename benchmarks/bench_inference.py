"""Inference speed of cnnlab's torch paths against onnxruntime, as ratios measured in one run.

For LeNet-5 (1×32×32) at batch 1 and 256, and ResNet-18 and MobileNet v1 (3×224×224, 1000 classes) at
batch 1 and 32, images/s of:
  eager           the model in eval mode under torch.inference_mode()
  fused           BatchNorm folded into the convolutions (cnnlab.eval.fuse_bn)
  channels_last   the eager model in channels-last memory format
  fused+cl        both
  bf16            the fused model under CPU bf16 autocast, only where the CPU does bf16 natively
                  (AVX512-BF16 / AMX); skipped elsewhere (emulated bf16 is slower than fp32)
  torchscript     the fused channels-last model traced, as `cnnlab export --format torchscript --fuse-bn
                  --channels-last` writes it (no Python per layer: what matters at batch 1)
  onnxruntime     the model exported by cnnlab (torch.onnx, dynamic batch axis) run by onnxruntime's CPU
                  provider with the same thread count; its outputs are checked against eager torch
                  (max abs difference, 1e-4 tolerance) on every case: by cnnlab's own export check, then
                  again with the timed session
Variants are timed in interleaved rounds (every variant once per round, so all see the same machine load)
and the best round is kept. The weights are untrained (BN statistics from one pass over random inputs):
speed does not depend on them.

    python benchmarks/bench_inference.py [--full] [--threads N] [--json PATH]

prints a table (and writes the raw results with --json). `run(quick=True)` returns the same dict;
benchmarks/inference.py runs it inside the harness (`python -m benchmarks --only inference`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cnnlab.models import build_model  # noqa: E402
from cnnlab.utils.io import write_json_atomic  # noqa: E402

CASES = (("lenet5", (1, 32, 32), 10, (1, 256), {}),
         ("resnet18", (3, 224, 224), 1000, (1, 32), {}),
         ("mobilenet_v1", (3, 224, 224), 1000, (1, 32), {}))
PARITY_TOLERANCE = 1e-4


def bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), so autocast to bf16 can pay off."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
        return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    except OSError:
        return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and \
            bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "bf16_native": bf16_native(), "python": platform.python_version()}


def _model(name: str, shape: tuple[int, int, int], classes: int, opts: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, in_channels=shape[0], input_size=shape[1:], **opts)
    for m in model.modules():  # BN running statistics from one pass (a cumulative average), as after training
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *shape))
    with torch.no_grad():  # torchvision's classifier init keeps untrained logits small (parity in absolute terms)
        model.get_classifier().weight.normal_(0, 0.01)
    return model.eval()


def _ort_session(model: torch.nn.Module, x: torch.Tensor, threads: int, folder: str):
    """The model exported by cnnlab (export_model: torch.onnx, dynamic batch axis, parity-checked in
    onnxruntime on `x`) and an onnxruntime session on it with `threads` intra-op threads."""
    import onnxruntime as ort

    from cnnlab.eval.export import ParityError, export_model

    path = Path(folder) / "model.onnx"
    try:
        result = export_model(model, "onnx", path, batch=x, metadata={"benchmark": True})
    except ParityError as exc:  # recorded as a failed case, not timed
        return None, float(str(exc).split(" by ")[1].split(" ")[0])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), result.max_abs_diff


def _variants(model, shape, batch: int, threads: int, folder: str) -> tuple[dict, float]:
    """name -> zero-argument callable running one batch; and onnxruntime's max abs difference to eager."""
    from cnnlab.eval.fuse import fuse_bn

    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes about BNs left unfolded do not matter here
        fused = fuse_bn(model)
    cl = _copy(model).to(memory_format=torch.channels_last)
    fused_cl = _copy(fused).to(memory_format=torch.channels_last)
    session, export_diff = _ort_session(model, x, threads, folder)
    x_np = x.numpy()

    def torch_call(m, inp, amp=False):
        def call():
            with torch.inference_mode(), (torch.autocast("cpu", dtype=torch.bfloat16) if amp
                                          else contextlib.nullcontext()):
                return m(inp)
        return call

    variants = {"eager": torch_call(model, x), "fused": torch_call(fused, x), "channels_last": torch_call(cl, x_cl),
                "fused+cl": torch_call(fused_cl, x_cl)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; it is still an export format here
        traced = torch.jit.trace(fused_cl, x_cl[:2] if batch >= 2 else x_cl, check_trace=False)
    variants["torchscript"] = torch_call(traced, x_cl)
    if bf16_native():
        variants["bf16"] = torch_call(fused_cl if shape[0] == 3 else fused, x_cl if shape[0] == 3 else x, amp=True)
    if session is None:
        return variants, export_diff
    variants["onnxruntime"] = lambda: session.run(None, {"input": x_np})[0]
    with torch.inference_mode():
        reference = model(x).numpy()
    diff = max(export_diff, float(np.abs(variants["onnxruntime"]() - reference).max()))
    return variants, diff


def _copy(model):
    import copy

    return copy.deepcopy(model)


def time_interleaved(variants: dict, reps: int, rounds: int, warmup: int = 2) -> dict[str, float]:
    """Best-of-`rounds` seconds per call of each variant; every round runs every variant `reps` times, in
    alternating order (forward, then backward) so that no variant always runs first."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = variants[name]
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / reps)
    return best


def _reps(name: str, batch: int, quick: bool) -> tuple[int, int]:
    """(calls per round, rounds): about the same wall time per case."""
    if name == "lenet5":
        reps = 200 if batch == 1 else 4
    else:
        reps = 6 if batch == 1 else 1
    # quick: 2 rounds after one warm-up round (make bench's ten minutes: the 224x224 cases at batch 32 take
    # seconds per call on one core); full: 5 rounds of three times the calls after two warm-up rounds
    return (reps, 2) if quick else (reps * 3, 5)


def run(quick: bool = True, threads: int | None = None) -> dict:
    """Measure every case; returns {"machine", "quick", "cases": [...]} (see the module docstring). `quick`
    may also be the benchmarks harness's Mode (quick/smoke -> quick, full -> not; its thread count)."""
    if not isinstance(quick, bool) and hasattr(quick, "name"):
        threads = threads or getattr(quick, "threads", None)
        quick = quick.name != "full"
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    out = {"machine": machine(), "quick": quick, "tolerance": PARITY_TOLERANCE, "cases": []}
    with tempfile.TemporaryDirectory() as folder:
        for name, shape, classes, batches, opts in CASES:
            model = _model(name, shape, classes, opts)
            for batch in batches:
                variants, diff = _variants(model, shape, batch, threads, folder)
                reps, rounds = _reps(name, batch, quick)
                secs = time_interleaved(variants, reps, rounds, warmup=1 if quick else 2)
                speed = {v: batch / s for v, s in secs.items()}
                torch_paths = {v: s for v, s in speed.items() if v != "onnxruntime"}
                fastest = max(torch_paths, key=torch_paths.get)
                fp32 = {v: s for v, s in torch_paths.items() if v != "bf16"}
                fastest_fp32 = max(fp32, key=fp32.get)
                ort_speed = speed.get("onnxruntime")
                out["cases"].append({
                    "model": name, "input": list(shape), "batch": batch,
                    "images_per_s": {v: round(s, 1) for v, s in speed.items()},
                    "ratio_to_eager": {v: round(s / speed["eager"], 3) for v, s in speed.items()},
                    "fastest_torch": fastest,
                    "onnxruntime_over_fastest_torch": round(ort_speed / speed[fastest], 3) if ort_speed else None,
                    "fastest_fp32_torch": fastest_fp32,
                    "onnxruntime_over_fastest_fp32_torch": round(ort_speed / speed[fastest_fp32], 3) if ort_speed
                    else None,
                    "onnxruntime_max_abs_diff": diff, "onnxruntime_parity_ok": diff <= PARITY_TOLERANCE})
    return out


def render(results: dict) -> str:
    m = results["machine"]
    names = ["eager", "fused", "channels_last", "fused+cl", "bf16", "torchscript", "onnxruntime"]
    lines = [f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; torch {m['torch']}, onnxruntime "
             f"{m['onnxruntime']}; bf16 native: {m['bf16_native']}",
             "images/s (ratio to eager); ORT/torch = onnxruntime (fp32) over cnnlab's fastest torch path, "
             "ORT/fp32 = over its fastest fp32 torch path", "",
             f"{'model':<13}{'batch':>6}" + "".join(f"{n:>19}" for n in names)
             + f"{'ORT/torch':>11}{'ORT/fp32':>10}{'ORT diff':>10}"]
    for case in results["cases"]:
        cells = []
        for n in names:
            if n in case["images_per_s"]:
                cells.append(f"{case['images_per_s'][n]:>10.1f} ({case['ratio_to_eager'][n]:.2f}x)")
            else:
                cells.append(f"{'-':>19}")
        parity = f"{case['onnxruntime_max_abs_diff']:.1e}" + ("" if case["onnxruntime_parity_ok"] else "!")
        ratios = "".join(f"{r:>9.2f}x" if r else f"{'-':>10}" for r in (case["onnxruntime_over_fastest_torch"],
                                                                            case["onnxruntime_over_fastest_fp32_torch"]))
        lines.append(f"{case['model']:<13}{case['batch']:>6}" + "".join(f"{c:>19}" for c in cells)
                     + " " + ratios + f"{parity:>10}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="more repetitions and rounds (slower, steadier)")
    ap.add_argument("--threads", type=int, help="torch and onnxruntime intra-op threads (default: torch's)")
    ap.add_argument("--json", help="also write the raw results there (`python -m benchmarks --only inference` "
                                   "writes benchmarks/results/inference.json, the harness's file)")
    args, _ = ap.parse_known_args(argv)
    results = run(quick=not args.full, threads=args.threads)
    print(render(results), end="")
    if args.json:
        write_json_atomic(args.json, results)
    failed = [c for c in results["cases"] if not c["onnxruntime_parity_ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
