"""`cnnlab experiment list` / `experiment run NAME [--data D] [--quick] [--seeds K] [--jobs N]` /
`experiment table DIR`: the lectures' experiments, each one command."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cnnlab experiment list
  cnnlab experiment run lenet-table --quick            a few minutes on 2 CPU cores
  cnnlab experiment run batchnorm --seeds 3 --jobs 2   mean ± std over 3 seeds, 2 trainings at a time
  cnnlab experiment run lenet-table --data /data/usps.npz --set epochs=30
  cnnlab experiment table runs/experiments/lenet-table-20240101-120000   re-tabulate from the recorded runs

Each run writes RUNS_ROOT/experiments/<name>-<time>/ (table.md, results.json, plot.png, experiment.json);
its trainings are ordinary runs in RUNS_ROOT, on the `cnnlab runs` leaderboard. Repeating a command with
the same --out continues an interrupted experiment."""


def add_parser(sub):
    p = sub.add_parser("experiment", help="the lectures' experiments: list, run, re-tabulate",
                       description="Reproduce the lectures' experiments at laptop scale, with the lectures' "
                                   "published figures beside the measured ones.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub2 = p.add_subparsers(dest="experiment_command", metavar="{list,run,table}", parser_class=type(p))
    ls = sub2.add_parser("list", help="the experiments and what they reproduce")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(func=_list)
    run = sub2.add_parser("run", help="train an experiment's runs and write its table and plot",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("name", metavar="NAME", help="experiment name (see `cnnlab experiment list`)")
    run.add_argument("--data", metavar="DATA", help="dataset for every run (default: the experiment's, digits)")
    run.add_argument("--quick", action="store_true", help="tiny data and 1-2 epochs: checks the pipeline in "
                                                          "minutes, not the lectures' numbers")
    run.add_argument("--seeds", type=int, default=None, metavar="K",
                     help="train each cell with seeds 0..K-1; cells show mean ± std (default 1; transfer: its own)")
    run.add_argument("--jobs", type=int, default=1, metavar="N", help="N trainings at a time, in separate "
                                                                      "processes (default 1)")
    run.add_argument("--root", default="runs", metavar="DIR", help="runs root: where the trainings and "
                                                                   "index.sqlite go (default runs)")
    run.add_argument("--out", metavar="DIR", help="experiment directory (default ROOT/experiments/NAME-TIME)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a training option for every run, e.g. --set epochs=5 --set threads=1 (repeatable)")
    run.set_defaults(func=_run)
    tab = sub2.add_parser("table", help="re-tabulate an experiment directory from its recorded runs")
    tab.add_argument("dir", metavar="DIR")
    tab.set_defaults(func=_table)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _list(args) -> int:
    import json

    from ..experiments import list_experiments

    specs = list_experiments()
    if args.format == "json":
        print(json.dumps([{"name": s.name, "title": s.title, "summary": s.summary, "runs": len(s.cells)}
                          for s in specs], indent=2))
        return 0
    width = max(len(s.name) for s in specs)
    for s in specs:
        runs = f"{len(s.cells)} runs per seed" if s.cells else "delegated"
        print(f"{s.name:<{width}}  {s.summary} [{runs}]")
    return 0


def _run(args) -> int:
    import sys
    import time

    from ..experiments.runner import ExperimentInterrupted, parse_sets, run_experiment

    overrides = parse_sets(args.set)
    start = time.perf_counter()

    def on_event(kind: str, info: dict) -> None:
        where = f"{info['cell']} seed {info['seed']}"
        if kind == "start":
            print(f"  start  {where}{' (resuming)' if info.get('resumed') else ''}", file=sys.stderr, flush=True)
        else:
            extra = f": {info['detail']}" if info.get("detail") else ""
            print(f"  [{info['index']}/{info['total']}] {info['status']:<8} {where}{extra} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    try:
        result = run_experiment(args.name, data=args.data, quick=args.quick, seeds=args.seeds, jobs=args.jobs,
                                root=args.root, out=args.out, overrides=overrides, on_event=on_event)
    except ExperimentInterrupted as stop:
        print(f"cnnlab experiment: interrupted; finished runs are kept, interrupted ones resume from their "
              f"checkpoints. Continue with the same command and --out {stop.directory}", file=sys.stderr, flush=True)
        return 130
    _show(result)
    return 0


def _table(args) -> int:
    from ..experiments.runner import tabulate_experiment

    _show(tabulate_experiment(args.dir))
    return 0


def _show(result) -> None:
    print(result.table, end="")
    print(f"\nwritten: {result.directory}/table.md, results.json"
          + (f", {result.plot.name}" if result.plot else ""))
