"""The run explainer page (`cnnlab explain RUN_DIR IMAGE`): how long building a page takes, how that time
splits between the model's forward pass and encoding the tiles, how large pages get, and (when a headless
Chromium is installed) how long the browser takes to show one.

Models carry freshly initialised weights at their own input size (the page's work does not depend on
training); LeNet-5 at 32×32 grey stands for the digits runs, the 224×224 models for ImageNet-sized runs.

Usage: python benchmarks/bench_explain_run.py [--models lenet5,resnet18,...] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.explain.page import render_page
from cnnlab.explain.run_page import PAGE_BUDGET, explain_image, fit_budget, page_data
from cnnlab.models import build_model, model_info
from cnnlab.runs import Preprocess

DEFAULT_MODELS = "lenet5,resnet18,googlenet,vgg16,alexnet"


def build_page(name: str, rounds: int) -> dict:
    """Median seconds of the forward pass and of the whole page (forward + tiles + HTML), and its size."""
    c, h, w = (model_info(name).in_channels, *model_info(name).input_size)
    model = build_model(name, num_classes=10).eval()
    pre = Preprocess((h, w), c, "shorter-crop", 0, (0.5,) * c, (0.25,) * c)
    image = torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    classes = [str(i) for i in range(10)]
    forward, total, html, reduced = [], [], "", []
    for _ in range(rounds):
        t0 = time.perf_counter()
        explained = explain_image(model, image, pre)
        t1 = time.perf_counter()
        html, reduced = fit_budget(lambda ch, tile, red: render_page(
            "run.html.j2", name, {**page_data(explained, classes, {"run": name}, ch, tile), "notes": red}),
            PAGE_BUDGET, 64)
        t2 = time.perf_counter()
        forward.append(t1 - t0)
        total.append(t2 - t0)
    tiles = sum(min(64, t.output.shape[0]) if t.output.dim() == 3 else 1 for t in explained.traces)
    return {"model": name, "input": f"{c}x{h}x{w}", "tiles": tiles, "forward_s": statistics.median(forward),
            "page_s": statistics.median(total), "bytes": len(html.encode()), "reduced": bool(reduced), "html": html}


def browser_ready(pages: dict[str, str], rounds: int) -> dict[str, float]:
    """Median seconds from navigation to the page's ready flag in headless Chromium, per page."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import Browser, find_browser

    binary, driver, reason = find_browser()
    if reason:
        print(f"(no browser timing: {reason})")
        return {}
    b = Browser(binary, driver)
    out = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            for name, html in pages.items():
                path = Path(d) / f"{name}.html"
                path.write_text(html)
                times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    b.open(path)
                    times.append(time.perf_counter() - t0)
                assert not b.console_errors() and not b.network_requests()
                out[name] = statistics.median(times)
    finally:
        b.quit()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [build_page(m, args.rounds) for m in args.models.split(",")]
    ready = browser_ready({r["model"]: r["html"] for r in rows}, args.rounds)
    print(f"{'model':<10} {'input':<10} {'tiles':>5} {'page s':>7} {'forward':>8} {'size KiB':>9} {'browser s':>9}")
    for r in rows:
        r["browser_s"] = ready.get(r["model"])
        share = r["forward_s"] / r["page_s"]
        print(f"{r['model']:<10} {r['input']:<10} {r['tiles']:>5} {r['page_s']:>7.2f} {share:>7.0%} "
              f"{r['bytes'] / 1024:>9.0f} {r['browser_s'] or float('nan'):>9.2f}"
              + ("  (reduced to fit the budget)" if r["reduced"] else ""))
    print(f"torch {torch.__version__}, {args.threads} thread(s); medians of {args.rounds}; 'forward' is the forward "
          "pass's share of the page's build time")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "html"} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
