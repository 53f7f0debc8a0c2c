"""What every benchmark shares: interleaved timing with warm-up, repeats and median/spread; the mode
(quick, full, smoke); pass/fail checks on ratios; and the result file with the machine, torch version and
git commit beside the figures.

Speed is only ever reported as measured here, in one run, on the machine described in the same file.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


def shared_dir() -> Path:
    """../shared beside the checkout (where CI lays it), or $CNNLAB_SHARED."""
    return Path(os.environ.get("CNNLAB_SHARED", ROOT.parent / "shared"))


@dataclass
class Mode:
    """How much to run: `quick` fits `make bench` (minutes on 2 cores), `full` is the long version, `smoke`
    only proves the harness works (tiny sizes, figures meaningless)."""

    name: str = "quick"
    threads: int = 1
    device: str = "cpu"

    @property
    def full(self) -> bool:
        return self.name == "full"

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    def pick(self, quick, full, smoke=None):
        """The value for this mode (smoke falls back to quick's when not given)."""
        if self.full:
            return full
        if self.smoke and smoke is not None:
            return smoke
        return quick


@dataclass
class Stats:
    """Median and spread of repeated measurements (spread = (max - min) / median)."""

    median: float
    low: float
    high: float
    samples: list[float]

    @classmethod
    def of(cls, samples: list[float]) -> "Stats":
        return cls(statistics.median(samples), min(samples), max(samples), list(samples))

    @property
    def spread(self) -> float:
        return (self.high - self.low) / self.median if self.median else 0.0

    def to_dict(self, digits: int = 4) -> dict:
        return {"median": round(self.median, digits), "low": round(self.low, digits),
                "high": round(self.high, digits), "spread": round(self.spread, 3),
                "samples": [round(s, digits) for s in self.samples]}


def interleaved(sides: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, Stats]:
    """Call every side `warmup` times untimed, then `repeats` rounds of one call each, the order reversed
    every other round so that drift on a shared machine (another job starting, clocks) hits all sides
    alike. Each call returns its own measurement (seconds, or a rate)."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            samples[name].append(sides[name]())
    return {name: Stats.of(values) for name, values in samples.items()}


def paired_ratio(num: Stats, den: Stats) -> Stats:
    """Round-by-round ratios num/den: each pair saw the same moment's load, so their median is steadier
    than the ratio of medians."""
    return Stats.of([a / b for a, b in zip(num.samples, den.samples)])


def timed(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of `fn` takes (`sync` waits for a GPU's queued work before the clock stops)."""
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


@dataclass
class Check:
    """A pass/fail threshold on one measured figure (`op` is ">=" or "<=")."""

    what: str
    value: float | None
    op: str
    threshold: float
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class Result:
    """One benchmark's outcome: raw figures, the summary rows shown in the table and the README, checks."""

    name: str
    title: str
    figures: dict
    rows: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


def git_commit() -> dict:
    """HEAD's commit and whether the tree had uncommitted changes (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # the result files themselves are rewritten by every run: they do not make the code "dirty"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine() -> dict:
    """cnnlab env's description of this machine, as the result files record it."""
    from cnnlab.env import describe_machine

    info = describe_machine(idle_interval=0.2)
    return {"short": info.short(), **info.to_dict()}


def _loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the shared machine was while the benchmark ran."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def write_result(result: Result, mode: Mode, seconds: float, results_dir: Path, host: dict) -> Path:
    """benchmarks/results/<name>.json, written atomically."""
    import torch

    from cnnlab.utils.io import write_json_atomic

    doc = {"schema_version": SCHEMA_VERSION, "name": result.name, "title": result.title, "mode": mode.name,
           "threads": mode.threads, "device": mode.device,
           "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
           "torch": torch.__version__, "git": git_commit(), "machine": host, "load_average_after": _loadavg(),
           "skipped": result.skipped, "rows": [list(r) for r in result.rows],
           "checks": [c.to_dict() for c in result.checks], "notes": result.notes, "figures": result.figures}
    path = results_dir / f"{result.name}.json"
    write_json_atomic(path, doc)
    return path


def fmt_ratio(stats: Stats) -> str:
    """A ratio as `1.03× (0.98–1.05)`."""
    return f"{stats.median:.2f}× ({stats.low:.2f}–{stats.high:.2f})"
