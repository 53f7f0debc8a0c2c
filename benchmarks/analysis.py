"""Analysis speed: `summarize()` (shapes on meta tensors, exact FLOPs, receptive fields) against one real
forward pass of the same network at batch 1, and the CLI's start-up: `cnnlab --help` and `cnnlab summary
resnet152` against `python -c "import torch"` (the floor any torch program pays; `--help` must not pay it)."""

from __future__ import annotations

import subprocess
import sys
import time

from .harness import ROOT, Check, Mode, Result, fmt_ratio, interleaved, paired_ratio, timed

NAME = "analysis"


def _cli_seconds(args: list[str]) -> float:
    """Wall seconds of a fresh interpreter running `args` from the checkout (start-up included)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.decode()[-300:]}")
    return time.perf_counter() - start


def run(mode: Mode) -> Result:
    import torch

    import cnnlab
    from cnnlab.models import build_model

    repeats = mode.pick(5, 9, smoke=2)
    models = mode.pick(["resnet50", "vgg16"], ["resnet50", "resnet152", "vgg16", "googlenet"], smoke=["lenet5"])
    figures: dict = {"threads": mode.threads, "models": {}}
    rows, checks = [], []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name).eval()
        size = (model.in_channels, *model.input_size)
        x = torch.randn(1, *size)

        def forward(model=model, x=x) -> float:
            with torch.no_grad():
                return timed(lambda: model(x))

        stats = interleaved({"summary": lambda model=model, size=size: timed(lambda: cnnlab.summarize(model, size)),
                             "forward": forward}, repeats)
        ratio = paired_ratio(stats["forward"], stats["summary"])
        figures["models"][name] = {"input": list(size), "summary_s": stats["summary"].to_dict(4),
                                   "forward_s": stats["forward"].to_dict(4), "forward_over_summary": ratio.to_dict(2)}
        rows.append((f"`summarize({name})` at {'x'.join(map(str, size))} vs one real forward at batch 1",
                     f"{stats['summary'].median * 1000:,.1f} ms vs {stats['forward'].median * 1000:,.1f} ms: "
                     f"the analysis is {fmt_ratio(ratio)} cheaper"))
        checks.append(Check(f"summarize({name}) cheaper than one forward", ratio.median, ">=", 1.0))

    big = mode.pick("resnet152", "resnet152", smoke="lenet5")
    cli = interleaved({
        "import_torch": lambda: _cli_seconds(["-c", "import torch"]),
        "cnnlab_help": lambda: _cli_seconds(["-m", "cnnlab", "--help"]),
        "cnnlab_summary": lambda: _cli_seconds(["-m", "cnnlab", "summary", big]),
    }, mode.pick(3, 5, smoke=1))
    help_ratio = paired_ratio(cli["cnnlab_help"], cli["import_torch"])
    summary_ratio = paired_ratio(cli["cnnlab_summary"], cli["import_torch"])
    figures["cli_s"] = {k: v.to_dict(3) for k, v in cli.items()}
    figures["cli_ratios"] = {"help_over_import_torch": help_ratio.to_dict(2),
                             "summary_over_import_torch": summary_ratio.to_dict(2)}
    rows.append(("`cnnlab --help` wall time (fresh process) vs `python -c \"import torch\"`",
                 f"{cli['cnnlab_help'].median:.2f} s vs {cli['import_torch'].median:.2f} s ({fmt_ratio(help_ratio)})"))
    rows.append((f"`cnnlab summary {big}` wall time vs `python -c \"import torch\"`",
                 f"{cli['cnnlab_summary'].median:.2f} s vs {cli['import_torch'].median:.2f} s "
                 f"({fmt_ratio(summary_ratio)})"))
    checks.append(Check("cnnlab --help / import torch (help never imports torch)", help_ratio.median, "<=", 0.5))
    checks.append(Check(f"cnnlab summary {big} / import torch", summary_ratio.median, "<=", 2.5))
    return Result(NAME, "Analysis speed", figures, rows, checks)
