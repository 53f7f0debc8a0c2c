"""What goes into the runs index: `RunRecorder` (training tells it a run started, finished an epoch,
finished, failed or was pruned) and `import_runs` (run directories written before the index existed, or on
another machine, read through cnnlab.runs.Run).

The index is a convenience beside the run directory, never a reason for a run to fail: when it cannot be
written (a read-only runs root, a corrupt file) training goes on and one note says so."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CnnlabError, CnnlabWarning, ConfigError
from .index import RunIndex, first_line, host_name, lock_is_free, now


def model_flops(model, image_shape) -> int | None:
    """FLOPs of one forward pass on one C×H×W image, by the lectures' convention (a multiply-add counts 2),
    from cnnlab.analysis.summarize; None when the model cannot be traced."""
    try:
        from ..analysis.summary import summarize

        return int(summarize(model, tuple(int(v) for v in image_shape)).totals["flops"])
    except Exception:  # noqa: BLE001 - a model the tracer cannot follow still trains; FLOPs stay unknown
        return None


def failure_status(exc: BaseException) -> tuple[str, str]:
    """(status, detail) a run that stopped with `exc` is recorded with: pruned for an exception that says so
    (`run_status = "pruned"`, as a sweep's pruning hook raises), failed otherwise, with why."""
    if getattr(exc, "run_status", None) == "pruned":
        return "pruned", first_line(exc) or "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "failed", "interrupted (resumable with cnnlab train --resume)"
    if type(exc).__name__ == "TrainingDiverged":  # cnnlab.train.trainer's; named, not imported (torch-free)
        return "failed", f"diverged: {first_line(exc)}"
    if isinstance(exc, CnnlabError):
        return "failed", first_line(exc)
    return "failed", f"{type(exc).__name__}: {first_line(exc)}"


def epoch_values(records: list[dict]) -> dict[str, Any]:
    """Index columns from per-epoch records (metrics.jsonl's): the last epoch's numbers, the best val acc."""
    if not records:
        return {}
    last = records[-1]
    vals = [r["val_acc"] for r in records if isinstance(r.get("val_acc"), (int, float))]
    return {"epochs": int(last.get("epoch", len(records))), "train_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_acc"), "val_loss": last.get("val_loss"),
            "val_accuracy": last.get("val_acc"), "best_val_accuracy": max(vals) if vals else None}


def result_values(summary: dict) -> dict[str, Any]:
    """Index columns from a result.json (the kept weights' validation and test scores, times)."""
    keys = {"val_accuracy": "val_accuracy", "test_accuracy": "test_accuracy", "test_loss": "test_loss",
            "test_top5": "test_top5", "train_seconds": "seconds", "wall_seconds": "wall_seconds",
            "epochs": "epochs", "params": "params"}
    return {col: summary[key] for col, key in keys.items() if summary.get(key) is not None}


RESULT_COLUMNS = ("epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "best_val_accuracy",
                  "test_loss", "test_accuracy", "test_top5", "train_seconds", "wall_seconds")


class RunRecorder:
    """The index row of one training run, kept current by training (`cnnlab.train.run` calls it). Every
    index error turns into one CnnlabWarning and switches the recorder off; training carries on."""

    def __init__(self, run_dir: str | Path, cfg, *, enabled: bool = True):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.index: RunIndex | None = None
        self.best_val: float | None = None
        self.enabled = enabled and os.environ.get("CNNLAB_NO_INDEX", "") in ("", "0")
        if self.enabled:
            self._safely(lambda: setattr(self, "index", RunIndex.for_run(self.run_dir)))

    def _safely(self, fn: Callable[[], Any]) -> None:
        if not self.enabled:
            return
        try:
            fn()
        except (CnnlabError, OSError, Exception) as exc:  # noqa: BLE001 - sqlite3 errors included
            self.enabled = False
            where = self.index.path if self.index is not None else self.run_dir.parent / "index.sqlite"
            warnings.warn(f"runs index {where}: not updated ({first_line(exc) or type(exc).__name__}); the run "
                          f"itself is unaffected (`cnnlab runs import` can add it later)", CnnlabWarning,
                          stacklevel=3)
            if self.index is not None:
                self.index.close()
                self.index = None

    def started(self, model, image_shape, *, resumed: bool = False, history: list[dict] | None = None) -> None:
        """The run holds its directory: status running, with what it trains and its size."""
        def write() -> None:
            cfg = self.cfg
            values = {} if resumed else dict.fromkeys(RESULT_COLUMNS)  # --overwrite: nothing of the old run stays
            values |= {"status": "running", "detail": None, "model": cfg.model, "data": cfg.data, "seed": cfg.seed,
                      "config": cfg.to_dict(), "params": sum(p.numel() for p in model.parameters()),
                      "flops": model_flops(model, image_shape), "epochs_planned": cfg.epochs,
                      "host": host_name(), "pid": os.getpid(), "started_at": now(), "finished_at": None,
                      "source": "train", **epoch_values(history or [])}
            self.best_val = values.get("best_val_accuracy")
            self.index.upsert_run(self.run_dir, values, keep=("started_at",) if resumed else ())
        self._safely(write)

    def epoch_end(self, trainer, record: dict) -> None:
        """Training hook ("epoch_end"): the epoch's numbers, so a running run shows its progress."""
        def write() -> None:
            values = epoch_values([record])
            if self.best_val is not None and values.get("best_val_accuracy") is not None:
                values["best_val_accuracy"] = max(self.best_val, values["best_val_accuracy"])
            self.best_val = values.get("best_val_accuracy", self.best_val)
            self.index.upsert_run(self.run_dir, values)
        self._safely(write)

    def finished(self, summary: dict) -> None:
        def write() -> None:
            values = {"status": "finished", "detail": None, "finished_at": now(), **result_values(summary)}
            self.index.upsert_run(self.run_dir, values)
        self._safely(write)
        self.close()

    def failed(self, exc: BaseException) -> None:
        def write() -> None:
            status, detail = failure_status(exc)
            self.index.upsert_run(self.run_dir, {"status": status, "detail": detail, "finished_at": now()})
        self._safely(write)
        self.close()

    def with_hooks(self, hooks: dict | None) -> dict:
        """`hooks` with this recorder's epoch_end hook first (so an epoch is recorded even when a later hook —
        a sweep's pruner — stops the run there); the caller's dict is not changed."""
        merged = {name: list(fns) for name, fns in (hooks or {}).items()}
        if self.enabled:
            merged["epoch_end"] = [self.epoch_end, *merged.get("epoch_end", [])]
        return merged

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None


# --- importing run directories -----------------------------------------------------------------------------

def values_from_run(run_dir: str | Path) -> dict[str, Any]:
    """Index columns for an existing run directory, read through cnnlab.runs.Run: finished when it has a
    result.json, running while its lock is held, failed (resumable) otherwise."""
    from ..runs import Run

    run = Run.open(run_dir)
    cfg = run.config
    result = run.result
    records = run.metrics
    values: dict[str, Any] = {"model": cfg.model, "data": cfg.data, "seed": cfg.seed, "config": cfg.to_dict(),
                              "epochs_planned": cfg.epochs, "params": run.info.get("params"), "source": "import",
                              **epoch_values(records)}
    try:
        from ..analysis.summary import summarize
        from ..runs import resolve_model_spec

        model, _, size = resolve_model_spec(str(run.path))
        values["flops"] = int(summarize(model, size).totals["flops"])
    except Exception:  # noqa: BLE001 - FLOPs stay unknown for a model the tracer cannot follow
        values["flops"] = None
    stamp = _mtime(run.path / "config.json")
    values["started_at"] = stamp
    if result is not None:
        values.update(status="finished", detail=None, finished_at=_mtime(run.path / "result.json"),
                      **result_values(result))
    elif not lock_is_free(run.path):
        values.update(status="running", detail=None, host=host_name())
    else:
        values.update(status="failed", detail="did not finish (no result.json); resumable with cnnlab train "
                                              "--resume if it has checkpoints")
    return values


def _mtime(path: Path) -> str | None:
    from datetime import datetime, timezone

    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).replace(microsecond=0).isoformat()
    except OSError:
        return None


@dataclass
class ImportReport:
    """What `import_runs` did: ids added, ids refreshed, (path, reason) skipped."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


SKIP_DIRS = {"checkpoints", "snapshots", "tensorboard", "__pycache__"}


def find_run_dirs(path: str | Path) -> list[Path]:
    """`path` itself when it is a run directory (it has config.json), else every run directory below it
    (not descending into a run, nor into hidden folders), sorted."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
    if (path / "config.json").is_file():
        return [path]
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        if "config.json" in filenames and Path(dirpath) != path:
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(found)


def import_runs(index: RunIndex, path: str | Path) -> ImportReport:
    """Add (or refresh) every run directory at or below `path` in `index`. Directories that are not
    readable runs are skipped with the reason; the runs themselves are only read."""
    report = ImportReport()
    for run_dir in find_run_dirs(path):
        try:
            values = values_from_run(run_dir)
        except ConfigError as exc:
            report.skipped.append((str(run_dir), str(exc)))
            continue
        known = index.run_id_of(run_dir)
        if known is not None and values["status"] == "running":
            continue  # a live run keeps its own row current
        run_id = index.upsert_run(run_dir, values, keep=("started_at",))
        (report.updated if known is not None else report.added).append(run_id)
    return report
