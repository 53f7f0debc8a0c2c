"""`cnnlab sweep --config sweep.yaml` (one worker of an Optuna study; run it on several machines with a shared
--storage) and `cnnlab sweep plot` (best so far against trial number, one line per study)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cnnlab sweep --config sweep.yaml                   the study lives in runs/index.sqlite
  cnnlab sweep --config sweep.yaml --trials 20       ask for more trials: the study continues
  cnnlab sweep plot --study lr-grid --study lr-random --out grid-vs-random.png

several processes or machines on one study (the same command on each; trials are shared out, none twice):
  cnnlab sweep --config sweep.yaml --storage postgresql://USER:PASSWORD@DBHOST:5432/cnnlab

A sweep stopped with Ctrl-C or killed continues when started again: its study is loaded, and the trial it
was running is queued again with the same parameters. See `cnnlab sweep --help` for the sweep file."""


def add_parser(sub):
    from ..experiments.sweep_config import __doc__ as file_doc

    p = sub.add_parser("sweep", help="hyperparameter sweeps with Optuna (grid, random, TPE; pruning; "
                                     "SQLite or PostgreSQL)",
                       description="Run trials of an Optuna study until it has the requested number. "
                                   + (file_doc or "").split("\n\n", 1)[-1],
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="the sweep file (YAML/JSON)")
    _common(p, top=True)
    p.add_argument("--trials", type=int, metavar="N", help="trials to finish (overrides the file)")
    p.set_defaults(func=_run)
    sub2 = p.add_subparsers(dest="sweep_command", metavar="{plot}", parser_class=type(p))
    plot = sub2.add_parser("plot", help="best-so-far against trial number, one line per study, and Optuna's "
                                        "plots of one study")
    _common(plot, top=False)
    plot.add_argument("--out", metavar="PNG", default="sweeps.png", help="figure path (default sweeps.png)")
    plot.set_defaults(func=_plot)


def _common(p, top: bool):
    """--root, --storage, --study on `sweep` and again on `sweep plot` (there without defaults, so that the
    values given before the sub-command stay)."""
    unset = argparse.SUPPRESS
    p.add_argument("--root", default="runs" if top else unset, metavar="DIR",
                   help="runs root: trial runs and index.sqlite (default runs)")
    p.add_argument("--storage", default=None if top else unset, metavar="URL",
                   help="Optuna storage: sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
                        "(default: the runs root's index.sqlite)")
    p.add_argument("--study", action="append", default=None if top else unset, metavar="NAME",
                   help="study name (sweep: overrides the file's; plot: repeatable, default all)")


def _run(args) -> int:
    import sys

    import optuna

    from ..errors import ConfigError
    from ..experiments.sweep import run_sweep
    from ..experiments.sweep_config import load_sweep_config

    if not args.config:
        raise ConfigError("give --config FILE (the sweep file; see `cnnlab sweep --help`), or `cnnlab sweep plot`")
    if args.study and len(args.study) > 1:
        raise ConfigError("--study: one study per sweep")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be a positive integer, got {args.trials}")
    cfg = load_sweep_config(args.config, study=args.study[0] if args.study else None, trials=args.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the lines below say what happens

    def on_event(kind: str, info: dict) -> None:
        if kind == "start":
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in info["params"].items())
            print(f"  trial {info['trial']}: {params}", file=sys.stderr, flush=True)
        elif kind == "done":
            print(f"  trial {info['trial']} {info['state']}: {info['detail']}", file=sys.stderr, flush=True)

    try:
        outcome = run_sweep(cfg, root=args.root, storage=args.storage, on_event=on_event)
    except KeyboardInterrupt:
        print(f"cnnlab sweep: interrupted; the running trial is queued again with its parameters. Continue with:\n"
              f"  cnnlab sweep --config {args.config}" + (f" --root {args.root}" if args.root != "runs" else "")
              + (" --storage URL" if args.storage else ""), file=sys.stderr, flush=True)
        return 130
    print(f"study {outcome.study}: {outcome.finished} trial{'s' if outcome.finished != 1 else ''} finished "
          f"({len(outcome.ran_here)} here) in {outcome.storage}")
    if outcome.best:
        b = outcome.best
        print(f"best: trial {b['trial']}, val_accuracy {b['value']:.4f}, {b['params']} ({b['run_dir']})")
    from pathlib import Path

    from ..experiments.sweep import default_storage, make_storage
    from ..experiments.sweep_plots import optuna_plots, plot_best_so_far

    storage = make_storage(args.storage or cfg.storage or default_storage(args.root), cfg)
    out_dir = Path(args.root) / "sweeps" / cfg.study
    written = [plot_best_so_far(storage, [cfg.study], out_dir / "best.png")[0]]
    written += optuna_plots(optuna.load_study(study_name=cfg.study, storage=storage), out_dir)
    print("figures: " + ", ".join(str(p) for p in written))
    return 0


def _plot(args) -> int:
    import optuna

    from ..experiments.sweep import default_storage, make_storage
    from ..experiments.sweep_config import SweepConfig
    from ..experiments.sweep_plots import plot_best_so_far

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or default_storage(args.root)
    if url.startswith("sqlite:///") and not __import__("os").path.isfile(url[len("sqlite:///"):]):
        from ..errors import ConfigError

        raise ConfigError(f"{url[len('sqlite:///'):]}: no such file (no sweep has run with --root {args.root})")
    storage = make_storage(url, SweepConfig(study="plot", space={"lr": [0.1]}))
    path, summary = plot_best_so_far(storage, args.study, args.out)
    for row in summary:
        best = "—" if row["best_val_accuracy"] is None else f"{row['best_val_accuracy']:.4f}"
        print(f"{row['study']} ({row['sampler']}): {row['finished']} trials finished, best val_accuracy {best}")
    print(f"figure: {path}")
    return 0
