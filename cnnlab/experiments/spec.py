"""What an experiment is, as data: the runs it trains (cells × seeds, each a set of TrainConfig options), the
columns its table reads from those runs, the lectures' published figures, the plot, and the sentences
("findings") that compare the two.

A cell's numbers always come from its recorded runs (result.json and metrics.jsonl read through
cnnlab.runs.Run, FLOPs from the runs index): `RunRecord` is what a column or a plot may look at."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One row of the table: `config` (TrainConfig options on top of the experiment's base), trained once
    per seed. `facts` describe the row for plots and findings (e.g. {"act": "relu"}); `published` holds
    the lectures' figure for a column key, where they give one."""

    key: str
    label: str
    config: dict
    facts: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)


@dataclass
class RunRecord:
    """One planned run as it was recorded: status (finished, failed, diverged, pruned, missing), result.json,
    the per-epoch records, and params / FLOPs from the runs index."""

    cell: str
    seed: int
    run_id: str
    path: str
    status: str
    detail: str | None = None
    result: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    params: int | None = None
    flops: int | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished" and self.result is not None


@dataclass(frozen=True)
class Column:
    """A table column: `measure` reads one number from a finished run (None: not available)."""

    key: str
    header: str
    measure: Callable[[RunRecord], float | None]
    digits: int = 2
    spread: bool = True  # mean ± std over seeds (False: the value is the same for every seed, e.g. params)


@dataclass
class CellResult:
    """A cell's runs and its column values aggregated over the seeds that finished."""

    cell: Cell
    runs: list[RunRecord]
    values: dict[str, dict] = field(default_factory=dict)  # column key → {"mean", "std", "n", "values"}

    def mean(self, key: str) -> float | None:
        v = self.values.get(key)
        return None if v is None or v["n"] == 0 else v["mean"]

    @property
    def finished_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.finished]

    @property
    def outcome(self) -> str:
        """finished when any seed finished; else the shared reason (diverged, failed…)."""
        if self.finished_runs:
            return "finished"
        states = {r.status for r in self.runs}
        return states.pop() if len(states) == 1 else "failed"


@dataclass
class ExperimentResult:
    """What `run_experiment` / `tabulate_experiment` return (also written as results.json, table.md, plot)."""

    name: str
    title: str
    experiment_id: str
    directory: Path
    options: dict
    cells: list[CellResult]
    findings: list[str]
    table: str
    plot: Path | None
    note: str
    lecture: str

    def cell(self, key: str) -> CellResult:
        for c in self.cells:
            if c.cell.key == key:
                return c
        raise KeyError(key)

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "experiment": self.name, "title": self.title,
                "experiment_id": self.experiment_id, "options": self.options, "lecture": self.lecture,
                "note": self.note, "findings": self.findings,
                "cells": [{"key": c.cell.key, "label": c.cell.label, "facts": c.cell.facts,
                           "config": c.cell.config, "published": c.cell.published, "outcome": c.outcome,
                           "values": c.values,
                           "runs": [{"seed": r.seed, "run_id": r.run_id, "path": r.path, "status": r.status,
                                     "detail": r.detail} for r in c.runs]} for c in self.cells]}


@dataclass(frozen=True)
class Experiment:
    """An experiment of the lectures as data. `base` holds the options of every run at full scale, `quick`
    what --quick changes (tiny data, 1-2 epochs); `plot(result, path)` draws the figure; `findings(result)`
    states what came out next to what the lectures say."""

    name: str
    title: str
    summary: str
    lecture: str
    cells: tuple[Cell, ...]
    columns: tuple[Column, ...]
    base: dict
    quick: dict
    quick_cells: tuple[str, ...] | None = None  # the cells --quick trains (None: all)
    published_header: str = ""
    note: str = ""
    plot: Callable[["ExperimentResult", Path], None] | None = None
    findings: Callable[["ExperimentResult"], list[str]] | None = None
    # An experiment another module runs in full: delegate(data=, quick=, seeds=, out_dir=) → (rows, plot path).
    delegate: Callable[..., tuple[list[dict], Path | None]] | None = None

    def cell(self, key: str) -> Cell:
        return next(c for c in self.cells if c.key == key)


# --- measures: numbers read from a recorded run -------------------------------------------------------------

def test_error(run: RunRecord) -> float | None:
    """Test error in % of the kept weights (result.json's test_accuracy)."""
    return 100.0 * (1.0 - run.result["test_accuracy"]) if run.result else None


def val_error(run: RunRecord) -> float | None:
    """Validation error in % of the kept weights (result.json's val_accuracy)."""
    acc = (run.result or {}).get("val_accuracy")
    return None if acc is None else 100.0 * (1.0 - acc)


def last_train_error(run: RunRecord) -> float | None:
    """Training error in % during the last epoch (metrics.jsonl's train_acc: the running average over the
    epoch, in training mode — as the papers' training-error curves are measured)."""
    return 100.0 * (1.0 - run.metrics[-1]["train_acc"]) if run.metrics else None


def params(run: RunRecord) -> float | None:
    return (run.result or {}).get("params", run.params)


def mflops(run: RunRecord) -> float | None:
    return None if run.flops is None else run.flops / 1e6


def train_seconds(run: RunRecord) -> float | None:
    return (run.result or {}).get("seconds")


def images_per_second(run: RunRecord) -> float | None:
    return (run.result or {}).get("images_per_s")


def epochs_to_train_error(threshold: float) -> Callable[[RunRecord], float | None]:
    """The first epoch whose training error (metrics.jsonl) is at or below `threshold` %; inf if none was."""
    def measure(run: RunRecord) -> float | None:
        if not run.metrics:
            return None
        for rec in run.metrics:
            if 100.0 * (1.0 - rec["train_acc"]) <= threshold:
                return float(rec["epoch"])
        return math.inf
    measure.__doc__ = f"epochs until the training error is <= {threshold} %"
    return measure


def aggregate(values: list[float | None]) -> dict[str, Any]:
    """mean and sample standard deviation (0 for one value) of the finite values, n (all values given) and
    `unreached` (how many are inf: a threshold a run never reached)."""
    given = [v for v in values if v is not None]
    finite = [v for v in given if not math.isinf(v)]
    out: dict[str, Any] = {"mean": None, "std": None, "n": len(given), "unreached": len(given) - len(finite),
                           "values": given}
    if finite:
        out["mean"] = statistics.fmean(finite)
        out["std"] = statistics.stdev(finite) if len(finite) > 1 else 0.0
    elif given:
        out["mean"] = math.inf
    return out


def fmt_value(v: dict | None, digits: int, spread: bool = True) -> str:
    """'1.23 ± 0.45' (several seeds), '1.23' (one), 'not reached' / '3.00 (2/3 reached)' for thresholds."""
    if not v or v["n"] == 0:
        return "—"
    mean = v["mean"]
    if mean is not None and math.isinf(mean):
        return "not reached"
    text = f"{mean:,.{digits}f}"
    if spread and v["n"] - v.get("unreached", 0) > 1 and v["std"] is not None:
        text += f" ± {v['std']:.{digits}f}"
    if v.get("unreached"):
        text += f" ({v['n'] - v['unreached']}/{v['n']} reached)"
    return text


# The columns of a table that follows one network from training to test: size, the last epoch's training error,
# the kept weights' validation and test errors (ablation, plain-vs-residual).
PARAMS = Column("params", "parameters", params, digits=0, spread=False)
TRAIN_VAL_TEST = (PARAMS, Column("train_error", "train error % (last epoch)", last_train_error),
                  Column("val_error", "val error %", val_error), Column("test_error", "test error %", test_error))
