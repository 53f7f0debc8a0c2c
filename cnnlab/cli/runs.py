"""`cnnlab runs`: the leaderboard of a runs root's index (RUNS_ROOT/index.sqlite); `runs show ID`,
`runs compare A B`, `runs import DIR`."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cnnlab runs                                        every run in runs/, best validation accuracy first
  cnnlab runs --where model=lenet5 --where "lr<0.05" --top 5
  cnnlab runs --sort test_accuracy --format csv > runs.csv
  cnnlab runs --study lenet-lr                       the trials of one sweep
  cnnlab runs show 20240101-120000-lenet5-digits     (or a unique prefix of the id, or the run's path)
  cnnlab runs compare RUN_A RUN_B
  cnnlab runs import old-runs/                       runs written before the index, or on another machine

The runs root is the parent of a run directory: `cnnlab train --out somewhere/x` records into
somewhere/index.sqlite. A run killed mid-way shows as running until its lock is seen released, then failed."""


def add_parser(sub):
    p = sub.add_parser("runs", help="the runs leaderboard: sort, filter, show, compare, import",
                       description="List the runs recorded in RUNS_ROOT/index.sqlite (every `cnnlab train`, "
                                   "experiment and sweep trial records itself there).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _root(p, "runs")
    p.add_argument("--where", action="append", default=[], metavar="KEY OP VALUE",
                   help="keep runs where KEY (a column such as model, status, val_accuracy, or a training option "
                        "such as lr) compares with VALUE; OP is one of = != > >= < <= ~ (contains); repeatable")
    for name in ("status", "model", "data", "experiment", "study"):
        p.add_argument(f"--{name}", metavar=name.upper(), help=f"shorthand for --where {name}={name.upper()}")
    p.add_argument("--sort", metavar="KEY", help="column or training option to sort by (default val_accuracy; "
                                                 "accuracies and times largest first, everything else smallest)")
    p.add_argument("--ascending", action=argparse.BooleanOptionalAction, default=None,
                   help="force the sort direction")
    p.add_argument("--top", type=int, metavar="N", help="only the first N runs")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=_list)
    sub2 = p.add_subparsers(dest="runs_command", metavar="{show,compare,import}", parser_class=type(p))
    show = sub2.add_parser("show", help="one run: every column, its configuration and its epochs")
    show.add_argument("run", metavar="ID", help="run id, unique prefix, or run directory")
    _root(show, argparse.SUPPRESS)
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(func=_show)
    cmp = sub2.add_parser("compare", help="two runs: the options that differ and their metrics side by side")
    cmp.add_argument("a", metavar="A")
    cmp.add_argument("b", metavar="B")
    _root(cmp, argparse.SUPPRESS)
    cmp.add_argument("--format", choices=("table", "json"), default="table")
    cmp.set_defaults(func=_compare)
    imp = sub2.add_parser("import", help="add run directories (written before the index, or elsewhere)",
                          description="Add every run directory at or below DIR to the index of --root "
                                      "(default runs/); the runs are only read. Running it again refreshes them.")
    imp.add_argument("dir", metavar="DIR")
    _root(imp, argparse.SUPPRESS)
    imp.set_defaults(func=_import)


def _root(p, default):
    p.add_argument("--root", default=default, metavar="DIR",
                   help="runs root holding index.sqlite (default: runs)")


def _list(args) -> int:
    from ..tracking.leaderboard import leaderboard, parse_filter, to_csv, to_json

    filters = [parse_filter(w) for w in args.where]
    filters += [(name, "=", getattr(args, name)) for name in ("status", "model", "data", "experiment", "study")
                if getattr(args, name) is not None]
    rows = leaderboard(args.root, filters, sort=args.sort, ascending=args.ascending, top=args.top)
    if args.format == "json":
        print(to_json(rows), end="")
    elif args.format == "csv":
        print(to_csv(rows), end="")
    else:
        _print_table(rows, args.root)
    return 0


def _fmt(key: str, value) -> str:
    if value is None:
        return "—"
    if key in ("params",):
        return f"{value:,}"
    if key == "flops":
        return f"{value / 1e6:,.2f}M"
    if key.endswith(("accuracy", "top5")):
        return f"{value:.4f}"
    if key.endswith(("seconds", "loss")):
        return f"{value:.3f}" if key.endswith("loss") else f"{value:.1f}"
    return str(value)


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=220)


def _print_table(rows: list[dict], root) -> None:
    from rich.table import Table

    from ..tracking.leaderboard import TABLE_COLUMNS, group_label

    headers = {"run_id": "run", "flops": "FLOPs", "val_accuracy": "val acc", "test_accuracy": "test acc",
               "wall_seconds": "wall s", "group": "experiment / trial"}
    table = Table(title=f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {root}/index.sqlite")
    for col in TABLE_COLUMNS:
        table.add_column(headers.get(col, col), justify="right" if col not in ("run_id", "status", "model", "data",
                                                                                "group") else "left",
                         overflow="fold", no_wrap=col in ("run_id", "status"))
    for row in rows:
        cells = []
        for col in TABLE_COLUMNS:
            if col == "group":
                cells.append(group_label(row))
            elif col == "model" and row.get("model") and len(row["model"]) > 40:
                cells.append(row["model"][:37] + "…")
            else:
                cells.append(_fmt(col, row.get(col)))
        table.add_row(*cells)
    _console().print(table)


def _show(args) -> int:
    import json

    from ..runs import read_metrics
    from ..tracking.index import RunIndex

    with RunIndex(args.root, create=False) as index:
        index.refresh_stale()
        row = index.run(args.run)
    epochs = read_metrics(row["path"])
    if args.format == "json":
        print(json.dumps({**row, "metrics": epochs}, indent=2, default=str))
        return 0
    from rich.table import Table

    table = Table(title=f"run {row['run_id']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in row.items():
        if key != "config":
            table.add_row(key, _fmt(key, value))
    for key, value in (row.get("config") or {}).items():
        table.add_row(f"config.{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console = _console()
    console.print(table)
    if epochs:
        per = Table(title="epochs (metrics.jsonl)")
        cols = [c for c in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr") if c in epochs[0]]
        for c in cols:
            per.add_column(c, justify="right")
        for rec in epochs:
            per.add_row(*[f"{rec[c]:.4g}" if isinstance(rec.get(c), float) else str(rec.get(c, "")) for c in cols])
        console.print(per)
    return 0


def _compare(args) -> int:
    import json

    from ..tracking.index import RunIndex
    from ..tracking.leaderboard import compare_runs

    with RunIndex(args.root, create=False) as index:
        index.refresh_stale()
        diff = compare_runs(index.run(args.a), index.run(args.b))
    if args.format == "json":
        print(json.dumps(diff, indent=2, default=str))
        return 0
    from rich.table import Table

    console = _console()
    opts = Table(title=f"options that differ: A = {diff['a']}, B = {diff['b']}")
    for c in ("option", "A", "B"):
        opts.add_column(c, overflow="fold")
    for item in diff["config"]:
        opts.add_row(item["option"], json.dumps(item["a"]), json.dumps(item["b"]))
    if not diff["config"]:
        opts.add_row("(none)", "", "")
    console.print(opts)
    mets = Table(title="metrics")
    for c in ("metric", "A", "B", "B − A"):
        mets.add_column(c, justify="left" if c == "metric" else "right", overflow="fold")
    for item in diff["metrics"]:
        delta = item["delta"]
        mets.add_row(item["metric"], _fmt(item["metric"], item["a"]), _fmt(item["metric"], item["b"]),
                     "" if delta is None else f"{delta:+.4g}")
    console.print(mets)
    return 0


def _import(args) -> int:
    from ..tracking.index import RunIndex
    from ..tracking.record import import_runs

    with RunIndex(args.root) as index:
        report = import_runs(index, args.dir)
    for path, why in report.skipped:
        print(f"skipped {path}: {why}")
    print(f"imported {len(report.added)} new run(s), refreshed {len(report.updated)}, skipped "
          f"{len(report.skipped)} into {index.path}")
    return 0
