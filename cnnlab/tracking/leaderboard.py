"""The leaderboard over a runs index: filters as the user types them (`model=lenet5`, `val_accuracy>0.9`,
`lr<=0.01` for a training option), sorting, top N, JSON/CSV output, and the differences between two runs."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .index import FILTER_OPS, NUMERIC_FIELDS, RUN_FIELDS, RunIndex

# Sorting on these puts the largest first; everything else (losses, times, sizes, names) smallest first.
HIGHER_FIRST = ("val_accuracy", "best_val_accuracy", "test_accuracy", "test_top5", "train_accuracy", "started_at",
                "updated_at", "finished_at", "epochs")
DEFAULT_SORT = "val_accuracy"
# What the table shows (JSON and CSV give every column).
TABLE_COLUMNS = ("run_id", "status", "model", "data", "seed", "params", "flops", "epochs", "val_accuracy",
                 "test_accuracy", "wall_seconds", "group")
METRICS = ("status", "detail", "params", "flops", "epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
           "best_val_accuracy", "test_loss", "test_accuracy", "test_top5", "train_seconds", "wall_seconds")
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(" + "|".join(sorted(map(re.escape, FILTER_OPS), key=len,
                                                                               reverse=True)) + r")\s*(.*?)\s*$")


def parse_filter(text: str) -> tuple[str, str, Any]:
    """'val_accuracy>0.9' → ('val_accuracy', '>', 0.9); a training option ('lr<0.05', 'model_opts.act=relu'
    is not supported, but 'config.lr' and bare 'lr' are) compares with the run's saved config."""
    m = _FILTER.match(text)
    if not m:
        raise ConfigError(f"--where {text!r}: expected KEY OP VALUE with OP one of {' '.join(FILTER_OPS)} "
                          f"(e.g. model=lenet5, val_accuracy>0.9, lr<=0.01)")
    key, op, raw = m.groups()
    column = resolve_column(key, option="--where")
    if raw and raw[0] in "=!<>~":  # 'lr<<0.1', 'lr=>0.1': an operator mistyped, not a value
        raise ConfigError(f"--where {text!r}: the value {raw!r} starts with an operator; OP is one of "
                          f"{' '.join(FILTER_OPS)}")
    value = _value(raw, numeric=column in NUMERIC_FIELDS or column.startswith("config."))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--where {text!r}: compare with a finite number, not {raw}")
    if column in NUMERIC_FIELDS and op != "~" and isinstance(value, str):
        raise ConfigError(f"--where {text!r}: {column} is a number; {raw!r} is not one")
    return column, op, value


def resolve_column(key: str, option: str = "--sort") -> str:
    """A leaderboard column, or `config.FIELD` for a training option (bare field names allowed)."""
    from ..train.config import TrainConfig

    key = key.strip()
    if key in RUN_FIELDS:
        return key
    name = key.split(".", 1)[1] if key.startswith("config.") else key
    name = name.replace("-", "_")
    if name in TrainConfig.field_names():
        return f"config.{name}"
    raise ConfigError(f"{option} {key!r}: unknown; columns: {', '.join(RUN_FIELDS)}; or a training option "
                      f"(lr, batch_size, … or config.FIELD)")


def _value(raw: str, numeric: bool) -> Any:
    low = raw.lower()
    if low in ("none", "null", ""):
        return None
    if low in ("true", "false"):
        return 1 if low == "true" else 0  # SQLite's JSON booleans
    if numeric:
        try:
            return int(raw) if re.fullmatch(r"[+-]?\d+", raw) else float(raw)
        except ValueError:
            pass
    return raw


def leaderboard(root: str | Path, filters: list[tuple[str, str, Any]] = (), sort: str | None = None,
                ascending: bool | None = None, top: int | None = None) -> list[dict]:
    """The runs of `root`'s index that pass every filter, best first by `sort` (default validation
    accuracy: choosing by test accuracy would tune on the test set), at most `top`. Runs whose writer died
    are first marked as such (RunIndex.refresh_stale)."""
    if top is not None and top < 1:
        raise ConfigError(f"--top must be a positive integer, got {top}")
    column = resolve_column(sort) if sort else DEFAULT_SORT
    descending = column in HIGHER_FIRST if ascending is None else not ascending
    with RunIndex(root, create=False) as index:
        index.refresh_stale()
        return index.runs(filters, sort=column, descending=descending, limit=top)


def group_label(row: dict) -> str:
    """Which experiment or sweep trial a run belongs to ('' for a plain `cnnlab train` run)."""
    if row.get("study"):
        return f"{row['study']}#{row['trial']}" if row.get("trial") is not None else str(row["study"])
    return row.get("experiment") or ""


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, default=str) + "\n"


def to_csv(rows: list[dict]) -> str:
    """Every column, one row per run; config as a JSON string."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RUN_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(row[k], sort_keys=True) if isinstance(row.get(k), (dict, list)) else row.get(k)
                         for k in RUN_FIELDS})
    return buf.getvalue()


def compare_runs(a: dict, b: dict) -> dict:
    """The training options that differ between runs `a` and `b`, and their metrics side by side with B − A."""
    ca, cb = a.get("config") or {}, b.get("config") or {}
    ignore = {"out", "quiet", "overwrite"}  # where a run was written and how it was shown
    config = [{"option": k, "a": ca.get(k), "b": cb.get(k)} for k in sorted(set(ca) | set(cb))
              if k not in ignore and ca.get(k) != cb.get(k)]
    metrics = []
    for k in METRICS:
        va, vb = a.get(k), b.get(k)
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        metrics.append({"metric": k, "a": va, "b": vb, "delta": delta})
    return {"a": a["run_id"], "b": b["run_id"], "config": config, "metrics": metrics}
