"""`python -m benchmarks`: run cnnlab's benchmarks, write benchmarks/results/<name>.json, print a summary.

    python -m benchmarks                   quick mode (what `make bench` runs: minutes on 2 cores)
    python -m benchmarks --full            the longer version (more data, repeats and seeds)
    python -m benchmarks --check           also apply the pass/fail thresholds: exit 1 if one fails
    python -m benchmarks --only data,analysis
    python -m benchmarks --readme          regenerate README.md's performance section from the JSON files
    python -m benchmarks --smoke --results DIR   tiny sizes, proves the harness runs (figures meaningless)
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .harness import RESULTS, ROOT, Mode, git_commit, machine, write_result

# Run order: the cheap ones first, so a quick look needs no waiting.
BENCHMARKS = (
    "analysis",
    "data",
    "throughput",
    "utilisation",
    "memory",
    "time_to_accuracy",
    "defaults",
    "inference",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(unknown) or repr(text)}; "
                                         f"known: {', '.join(BENCHMARKS)}")
    return names


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks", description="cnnlab's benchmarks: ratios measured in one run, "
                "each result written with the machine, torch version and git commit.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the long version (more data, repeats, seeds)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness runs (needs --results)")
    p.add_argument("--check", action="store_true", help="apply the pass/fail thresholds; exit 1 if one fails")
    p.add_argument("--only", type=_names, metavar="NAME[,NAME]", help=f"run only these ({', '.join(BENCHMARKS)})")
    p.add_argument("--threads", type=_threads, default=0,
                   help="torch threads, pinned for every benchmark (default 0: the cores idle at start)")
    p.add_argument("--results", type=Path, help=f"where the JSON files go (default {RESULTS})")
    p.add_argument("--readme", action="store_true",
                   help="regenerate README.md's performance section from the results and exit (runs nothing)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--child", choices=BENCHMARKS, help=argparse.SUPPRESS)  # run one, in this fresh process
    p.add_argument("--mode", choices=("quick", "full", "smoke"), default="quick", help=argparse.SUPPRESS)
    return p


def _table(results: list[tuple[str, dict | None, str | None]]) -> None:
    """The summary table: every row of every benchmark, then each check with its verdict."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=160)
    table = Table(title="cnnlab benchmarks", show_lines=False)
    table.add_column("benchmark", no_wrap=True, style="bold")
    table.add_column("what")
    table.add_column("figure")
    for name, doc, error in results:
        if error:
            table.add_row(name, "[red]failed[/red]", error)
            continue
        if doc["skipped"]:
            table.add_row(name, "skipped", doc["skipped"])
        for what, figure in doc["rows"]:
            table.add_row(name, what.replace("**", ""), figure.replace("**", ""))
    console.print(table)
    checks = Table(title="checks (pass/fail thresholds on ratios)")
    checks.add_column("benchmark", no_wrap=True, style="bold")
    checks.add_column("check")
    checks.add_column("value", justify="right", no_wrap=True)
    checks.add_column("threshold", no_wrap=True)
    checks.add_column("verdict", no_wrap=True)
    for name, doc, _ in results:
        for c in (doc or {}).get("checks", []):
            value = "-" if c["value"] is None else f"{c['value']:.3g}"
            verdict = "[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]"
            checks.add_row(name, c["what"] + (f" ({c['note']})" if c["note"] else ""), value,
                           f"{c['op']} {c['threshold']:g}", verdict)
    console.print(checks)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name in BENCHMARKS:
            doc = (importlib.import_module(f"benchmarks.{name}").__doc__ or "").strip().splitlines()[0]
            print(f"{name:<18} {doc}")
        return 0
    if args.readme:
        from .readme import update_readme

        path = update_readme(args.results or RESULTS)
        print(f"regenerated the performance section of {path}")
        return 0
    if args.smoke and args.results is None:
        print("python -m benchmarks: error: --smoke needs --results DIR (smoke figures must not replace the "
              "real ones)", file=sys.stderr)
        return 2
    if args.child:
        return _child(args)
    from cnnlab.train.run import auto_threads

    threads = args.threads or auto_threads()
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    results_dir = (args.results or RESULTS).resolve()
    host = machine()
    commit = git_commit()
    print(f"benchmarks ({mode} mode, {threads} threads) on {host['short']}; commit "
          f"{(commit['commit'] or '?')[:10]}{' (uncommitted changes)' if commit['dirty'] else ''}", flush=True)
    outcomes: list[tuple[str, dict | None, str | None]] = []
    for name in args.only or BENCHMARKS:
        # Each benchmark in a fresh process: peak memory, thread pools and caches start clean every time.
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        path = results_dir / f"{name}.json"
        proc = subprocess.run([sys.executable, "-m", "benchmarks", "--child", name, "--mode", mode, "--threads",
                               str(threads), "--results", str(results_dir)], cwd=ROOT)
        if proc.returncode:
            outcomes.append((name, None, f"exit status {proc.returncode} (its output is above)"))
            continue
        outcomes.append((name, json.loads(path.read_text()), None))
        print(f"    {time.perf_counter() - start:.1f} s, written to {path}", flush=True)
    _table(outcomes)
    crashed = [n for n, _, e in outcomes if e]
    failed = [f"{n}: {c['what']}" for n, d, _ in outcomes for c in (d or {}).get("checks", []) if not c["passed"]]
    if crashed:
        print(f"python -m benchmarks: {len(crashed)} benchmark(s) failed to run: {', '.join(crashed)}", file=sys.stderr)
        return 1
    if args.check and failed:
        print(f"python -m benchmarks: {len(failed)} check(s) failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _child(args) -> int:
    """Run one benchmark in this process and write its result file."""
    import torch

    mode = Mode(args.mode, args.threads or 1, "cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(mode.threads)
    host = machine()  # sampled before the run: which cores were idle when it started
    start = time.perf_counter()
    try:
        result = importlib.import_module(f"benchmarks.{args.child}").run(mode)
    except Exception:  # the parent reports the failure; the traceback is for whoever fixes the benchmark
        traceback.print_exc()
        return 1
    write_result(result, mode, time.perf_counter() - start, args.results or RESULTS, host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
