"""How far from the hardware's limit training runs, and what the speed options buy.

Peak: the machine's measured dense matmul rate (2·n³ FLOPs per n×n product) in fp32, and in bf16 where
the CPU computes it natively. Utilisation: FLOPs per training step — cnnlab's own analysis (`summarize`,
forward FLOPs per image) × 3 (the backward pass costs about twice the forward) × batch — divided by the
measured step time (forward, backward, SGD step) and by the peak of the step's precision. For LeNet-5
(1×32×32) and ResNet-18 with the CIFAR stem (3×32×32), each in fp32, channels-last, bf16 autocast and
both (plus torch.compile in --full), interleaved. Also: the main job's test accuracy under bf16.
"""

from __future__ import annotations

import contextlib
import tempfile

from .harness import Check, Mode, Result, Stats, interleaved, paired_ratio, timed

NAME = "utilisation"
MODELS = {"lenet5": ((1, 32, 32), {}), "resnet18": ((3, 32, 32), {"stem": "cifar"})}


def matmul_peak(n: int, dtype, repeats: int, device: str = "cpu") -> Stats:
    """FLOP/s of an n×n by n×n product (best conditions: large, square, contiguous)."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else None
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return Stats.of([2 * n ** 3 / s for s in
                     interleaved({"mm": lambda: timed(lambda: torch.mm(a, b), sync)}, repeats)["mm"].samples])


def _step(model_name: str, variant: str, batch: int, device: str):
    """A closure timing `steps` training steps of a fresh model in one variant."""
    import torch
    import torch.nn.functional as F

    from cnnlab.models import build_model

    shape, opts = MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=shape[0], input_size=shape[1:], **opts).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    low = torch.bfloat16 if "bf16" in variant else None
    amp = (lambda: torch.autocast(device, dtype=low)) if low is not None else contextlib.nullcontext
    sync = torch.cuda.synchronize if device == "cuda" else None

    def one() -> None:
        with amp():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(steps: int) -> float:
        return timed(lambda: [one() for _ in range(steps)], sync) / steps

    return run


def _train_flops(model_name: str) -> int:
    """Training FLOPs per image from cnnlab's analysis: forward × 3."""
    import cnnlab
    from cnnlab.models import build_model

    shape, opts = MODELS[model_name]
    model = build_model(model_name, num_classes=10, in_channels=shape[0], input_size=shape[1:], **opts)
    return 3 * cnnlab.summarize(model, shape).totals["flops"]


def step_table(mode: Mode, device: str, variants: tuple[str, ...], batches: dict, peaks: dict) -> dict:
    out = {}
    for name, batch in batches.items():
        steps = mode.pick(10, 20, smoke=1) if name == "lenet5" else 1
        fns = {v: _step(name, v, batch, device) for v in variants}
        stats = interleaved({v: (lambda fn=fn: fn(steps)) for v, fn in fns.items()}, mode.pick(3, 5, smoke=1),
                            warmup=2 if "compile" in variants else 1)
        flops = _train_flops(name) * batch
        rows = {}
        for v, s in stats.items():
            peak = peaks["bf16" if "bf16" in v else "fp32"]
            rate = flops / s.median
            rows[v] = {"ms_per_step": s.to_dict(5), "speedup_vs_fp32": paired_ratio(stats["fp32"], s).to_dict(2),
                       "flop_per_s": round(rate), "utilisation": round(rate / peak, 4) if peak else None}
        out[name] = {"batch": batch, "train_flops_per_step": flops, "variants": rows}
    return out


def bf16_accuracy(mode: Mode) -> dict:
    """Test accuracy of the main job (LeNet-5 on the digits, defaults) in fp32 and under bf16 autocast."""
    from cnnlab.train import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("none", "bf16"):
            result = train(amp=amp, quiet=True, out=f"{tmp}/{amp}", threads=mode.threads)
            out[amp] = {"test_accuracy": result.test_accuracy, "seconds": round(result.seconds, 2)}
    return out


def run(mode: Mode) -> Result:
    import torch

    from cnnlab.env import describe_machine

    native_bf16 = describe_machine(idle_interval=0.05).cpu.torch_bf16_native
    n = mode.pick(2048, 4096, smoke=256)
    repeats = mode.pick(5, 9, smoke=2)
    peaks = {"fp32": matmul_peak(n, torch.float32, repeats),
             "bf16": matmul_peak(n, torch.bfloat16, repeats) if native_bf16 else None}
    variants = ("fp32", "channels_last") + (("bf16", "bf16+channels_last") if native_bf16 else ())
    variants += ("compile",) if mode.full else ()
    batches = {"lenet5": 64, "resnet18": mode.pick(32, 64, smoke=2)}
    peak_medians = {k: (v.median if v else None) for k, v in peaks.items()}
    figures = {"threads": mode.threads, "matmul_n": n,
               "peak_flop_per_s": {k: (v.to_dict(0) if v else None) for k, v in peaks.items()},
               "cpu": step_table(mode, "cpu", variants, batches, peak_medians)}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: TF32 is reported on its own line
        gpu_peaks = {"fp32": matmul_peak(8192, torch.float32, repeats, "cuda").median,
                     "bf16": matmul_peak(8192, torch.bfloat16, repeats, "cuda").median}
        figures["cuda"] = {"device_name": name, "peak_flop_per_s": gpu_peaks,
                           "steps": step_table(mode, "cuda", ("fp32", "bf16", "bf16+channels_last"),
                                               {"lenet5": 256, "resnet18": 256}, gpu_peaks)}
    if not mode.smoke:
        figures["bf16_accuracy"] = bf16_accuracy(mode) if native_bf16 else None

    rows = [(f"dense matmul peak, {n}×{n}, {mode.threads} threads",
             f"fp32 {peaks['fp32'].median / 1e9:,.1f} GFLOP/s"
             + (f", bf16 {peaks['bf16'].median / 1e9:,.1f} GFLOP/s" if peaks["bf16"] else ", no native bf16"))]
    checks = []
    for where, table, label in [("cpu", figures["cpu"], "CPU")] + (
            [("cuda", figures["cuda"]["steps"], figures["cuda"]["device_name"])] if "cuda" in figures else []):
        for model_name, entry in table.items():
            parts = []
            for v, r in entry["variants"].items():
                util = f", {r['utilisation']:.1%} of peak" if r["utilisation"] is not None else ""
                speed = "" if v == "fp32" else f", {r['speedup_vs_fp32']['median']:.2f}× fp32"
                parts.append(f"{v} {r['ms_per_step']['median'] * 1000:,.1f} ms{speed}{util}")
                if r["utilisation"] is not None:
                    checks.append(Check(f"{label} {model_name} {v}: utilisation below the measured peak",
                                        r["utilisation"], "<=", 1.0, "above 1 would mean a measuring error"))
            rows.append((f"{model_name} train step, batch {entry['batch']}, {label} "
                         f"({entry['train_flops_per_step'] / 1e9:,.2f} GFLOP per step)", "; ".join(parts)))
    acc = figures.get("bf16_accuracy")
    if acc:
        rows.append(("main job test accuracy, fp32 vs bf16 autocast",
                     f"{acc['none']['test_accuracy']:.4f} vs {acc['bf16']['test_accuracy']:.4f}"))
        checks.append(Check("bf16 autocast keeps the main job's accuracy (fp32 − bf16)",
                            acc["none"]["test_accuracy"] - acc["bf16"]["test_accuracy"], "<=", 0.01))
    return Result(NAME, "Utilisation and speed options", figures, rows, checks)
