"""`cnnlab lr-find [MODEL] --data DATA`: the learning-rate range test; prints the suggested LR, writes a PNG.

Takes the same model/data/optimizer options as `cnnlab train` (so the test matches the run you plan)."""

from __future__ import annotations

import argparse


def add_parser(sub):
    from .train import add_arguments

    p = sub.add_parser("lr-find", help="learning-rate range test: suggest a learning rate, plot loss vs LR",
                       description="Train a few hundred steps with an exponentially increasing learning rate, "
                                   "smooth the loss curve and suggest the LR of its minimum / 10 (also "
                                   "shown: fast.ai's valley and the steepest descent). The model is left "
                                   "untouched.")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of training options (flags override it)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default: 10)")
    p.add_argument("--steps", type=int, default=200, help="number of steps (default: 200); stops early when "
                                                          "the smoothed loss exceeds 4x its minimum")
    p.add_argument("--plot", metavar="PNG", help="where to write the plot (default: "
                                                 "runs/lr-find-<model>-<data>.png)")
    add_arguments(p, skip=("out", "overwrite", "checkpoint_every", "nan_check_every", "ema", "ema_decay",
                           "ema_eval", "snapshots", "early_stopping", "monitor", "compile"))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train.lr_range import lr_find
    from .train import config_from_args

    cfg = config_from_args(args)
    plot = Path(args.plot) if args.plot else Path("runs") / f"lr-find-{Path(cfg.model).name}-{Path(cfg.data).stem}.png"
    result = lr_find(cfg, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps, plot=plot)
    print(f"suggested learning rate {result.suggestion:.3g} (the smoothed loss's minimum / 10); valley: "
          f"{result.valley:.3g}; steepest descent: {result.steepest:.3g}; {len(result.lrs)} steps from "
          f"{result.lrs[0]:.1e} to {result.lrs[-1]:.1e}")
    print(f"plot written to {result.plot}")
    return 0
