"""Inference speed: cnnlab's torch paths (eager, fused BN, channels-last, bf16, TorchScript) against
onnxruntime, for LeNet-5, ResNet-18 and MobileNet v1 (bench_inference.py measures; this module puts its
cases in the harness's result file, table and README section).

Checks: onnxruntime's outputs match eager torch's within bench_inference.PARITY_TOLERANCE on every case
(an export that runs fast but computes something else must not pass).
"""

from __future__ import annotations

from .harness import Check, Mode, Result

NAME = "inference"
PATHS = ("eager", "fused", "channels_last", "fused+cl", "bf16", "torchscript", "onnxruntime")


def _row(case: dict) -> tuple[str, str]:
    speed, ratio = case["images_per_s"], case["ratio_to_eager"]
    cells = ", ".join(f"{p} {speed[p]:,.1f} ({ratio[p]:.2f}×)" for p in PATHS if p in speed)
    ort = case["onnxruntime_over_fastest_torch"]
    tail = f"; onnxruntime / fastest torch path ({case['fastest_torch']}): **{ort:.2f}×**" if ort else ""
    shape = "×".join(str(v) for v in case["input"])
    return f"{case['model']} ({shape}), batch {case['batch']}: images/s (ratio to eager)", cells + tail


def run(mode: Mode) -> Result:
    from .bench_inference import PARITY_TOLERANCE, run as measure

    figures = measure(mode)
    rows = [_row(c) for c in figures["cases"]]
    checks = [Check(f"{c['model']} batch {c['batch']}: onnxruntime max |difference| from eager torch",
                    c["onnxruntime_max_abs_diff"], "<=", PARITY_TOLERANCE, "the exported model computes the same")
              for c in figures["cases"]]
    notes = ["each variant timed in interleaved rounds (the best round kept), untrained weights (speed does not "
             "depend on them); bf16 only where the CPU does bf16 natively"]
    return Result(NAME, "Inference: torch paths and onnxruntime", figures, rows, checks, notes)
