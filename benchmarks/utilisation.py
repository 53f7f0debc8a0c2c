"""How far from the hardware's limit training runs, and what the speed options buy.

Peak: the machine's measured dense matmul rate (2·n³ FLOPs per n×n product; the best over a few sizes
and calls, taken in turns with the training steps so both see the same load) in fp32, and in bf16 where
the CPU computes it natively. Utilisation: FLOPs per training step — cnnlab's own analysis (`summarize`,
forward FLOPs per image) × 3 (the backward pass costs about twice the forward) × batch — divided by the
measured step time (forward, backward, SGD step) and by the peak of the step's precision. For LeNet-5
(1×32×32) and ResNet-18 with the CIFAR stem (3×32×32), each in fp32, channels-last, bf16 autocast and
both (plus torch.compile in --full), interleaved. Also: the main job's test accuracy under bf16.
"""

from __future__ import annotations

import contextlib
import io
import tempfile

from .harness import Check, Mode, Result, Stats, interleaved, paired_ratio, timed

NAME = "utilisation"
MODELS = {"lenet5": ((1, 32, 32), {}), "resnet18": ((3, 32, 32), {"stem": "cifar"})}


PEAK_SIZES = (512, 1024, 2048)
GPU_PEAK_SIZES = (4096, 8192)  # a GPU needs large products to reach its peak


def matmul_peak(dtype, device: str = "cpu", sizes=PEAK_SIZES, calls: int = 3):
    """A closure measuring the dense matmul rate: the best FLOP/s (2·n³ per n×n by n×n product) over a
    few square sizes and calls, so each measurement is the peak of that moment."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else None
    pairs = [(torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype))
             for n in sizes]

    def best() -> float:
        return max(2 * a.shape[0] ** 3 / timed(lambda a=a, b=b: torch.mm(a, b), sync)
                   for a, b in pairs for _ in range(calls))

    return best


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


def step_table(mode: Mode, device: str, variants: tuple[str, ...], batches: dict, bf16: bool) -> dict:
    """Per model: ms per train step of each variant, its speed-up over fp32 and its utilisation — the
    step's FLOP/s over the matmul peak of the same precision measured in the same round (the peaks take
    turns with the steps, so both see the same load)."""
    import torch

    out = {}
    sizes = PEAK_SIZES if device == "cpu" else GPU_PEAK_SIZES
    peaks = {"peak_fp32": matmul_peak(torch.float32, device, sizes)}
    if bf16:
        peaks["peak_bf16"] = matmul_peak(torch.bfloat16, device, sizes)
    for name, batch in batches.items():
        steps = mode.pick(10, 20, smoke=1) if name == "lenet5" else 1
        sides = {v: (lambda fn=_step(name, v, batch, device): fn(steps)) for v in variants}
        stats = interleaved({**sides, **peaks}, mode.pick(3, 5, smoke=1), warmup=2 if "compile" in variants else 1)
        flops = _train_flops(name) * batch
        rows = {}
        for v in variants:
            peak = stats["peak_bf16" if "bf16" in v else "peak_fp32"]
            util = Stats.of([flops / t / p for t, p in zip(stats[v].samples, peak.samples)])
            rows[v] = {"seconds_per_step": stats[v].to_dict(5),
                       "speedup_vs_fp32": paired_ratio(stats["fp32"], stats[v]).to_dict(2),
                       "flop_per_s": round(flops / stats[v].median), "utilisation": util.to_dict(4)}
        out[name] = {"batch": batch, "train_flops_per_step": flops, "variants": rows,
                     "peak_flop_per_s": {k.removeprefix("peak_"): stats[k].to_dict(0) for k in peaks}}
    return out


def bf16_accuracy(mode: Mode) -> dict:
    """Test accuracy of the main job (LeNet-5 on the digits, defaults) in fp32 and under bf16 autocast."""
    from cnnlab.train import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        for amp in ("none", "bf16"):
            result = train(amp=amp, quiet=True, out=f"{tmp}/{amp}", threads=mode.threads)
            out[amp] = {"test_accuracy": result.test_accuracy, "seconds": round(result.seconds, 2)}
    return out


def run(mode: Mode) -> Result:
    import torch

    from cnnlab.env import describe_machine

    native_bf16 = describe_machine(idle_interval=0.05).cpu.torch_bf16_native
    variants = ("fp32", "channels_last") + (("bf16", "bf16+channels_last") if native_bf16 else ())
    notes = []
    if mode.full:
        try:  # torch.compile needs a working C++ toolchain on CPU; without one the variant is left out
            torch.compile(torch.nn.Linear(2, 2))(torch.zeros(1, 2))
            variants += ("compile",)
        except Exception as exc:  # inductor raises many kinds; any of them means "not here"
            notes.append(f"torch.compile left out: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    batches = {"lenet5": 64, "resnet18": mode.pick(32, 64, smoke=2)}
    figures = {"threads": mode.threads, "peak_matmul_sizes": list(PEAK_SIZES),
               "cpu": step_table(mode, "cpu", variants, batches, native_bf16)}
    if torch.cuda.is_available():
        # fp32 means fp32 here, in the peak and in the convolutions alike (TF32 would inflate both unevenly)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        figures["cuda"] = {"device_name": torch.cuda.get_device_name(0),
                           "steps": step_table(mode, "cuda", ("fp32", "bf16", "bf16+channels_last"),
                                               {"lenet5": 256, "resnet18": 256}, True)}
    if not mode.smoke:
        figures["bf16_accuracy"] = bf16_accuracy(mode) if native_bf16 else None

    rows, checks = [], []
    for table, label in [(figures["cpu"], "CPU")] + (
            [(figures["cuda"]["steps"], figures["cuda"]["device_name"])] if "cuda" in figures else []):
        for model_name, entry in table.items():
            peaks = ", ".join(f"{k} {v['median'] / 1e9:,.0f}" for k, v in entry["peak_flop_per_s"].items())
            parts = []
            for v, r in entry["variants"].items():
                speed = "" if v == "fp32" else f", {r['speedup_vs_fp32']['median']:.2f}× fp32"
                parts.append(f"{v} {r['seconds_per_step']['median'] * 1000:,.1f} ms{speed}, "
                             f"**{r['utilisation']['median']:.0%}** of peak")
                checks.append(Check(f"{label} {model_name} {v}: utilisation at most the measured peak",
                                    r["utilisation"]["median"], "<=", 1.1,
                                    "well above 1 would mean a counting or timing error"))
            rows.append((f"{model_name} train step, batch {entry['batch']}, {label}, {mode.threads} thread(s): "
                         f"{entry['train_flops_per_step'] / 1e9:,.2f} GFLOP per step (3 × forward, from "
                         f"`summarize`); matmul peak {peaks} GFLOP/s", "; ".join(parts)))
    acc = figures.get("bf16_accuracy")
    if acc:
        rows.append(("main job test accuracy, fp32 vs bf16 autocast",
                     f"{acc['none']['test_accuracy']:.4f} vs {acc['bf16']['test_accuracy']:.4f}"))
        checks.append(Check("bf16 autocast keeps the main job's accuracy (fp32 − bf16)",
                            acc["none"]["test_accuracy"] - acc["bf16"]["test_accuracy"], "<=", 0.01))
    return Result(NAME, "Utilisation and speed options", figures, rows, checks, notes)
