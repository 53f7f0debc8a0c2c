"""Running an experiment: plan its runs (cells × seeds), train them (one after another, or `jobs` at a time in
separate processes), record them in the runs index, then tabulate what the runs recorded and write the
experiment directory:

    RUNS_ROOT/experiments/<name>-<time>/    (or --out DIR)
        experiment.json   the plan: options and every run's directory (schema_version 1)
        results.json      the raw numbers: per cell and seed, what each run recorded, and the aggregates
        table.md          the table, the lectures' figures beside the measured ones, the findings
        plot.png          the experiment's figure

The runs themselves live in the runs root beside every other run (RUNS_ROOT/<experiment id>-<cell>-s<seed>),
so the leaderboard shows them, labelled with the experiment. Running the same command with the same --out
again continues an interrupted experiment: finished runs are kept, interrupted ones resume from their
checkpoint, the rest are trained."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..errors import CnnlabError, CnnlabWarning, ConfigError
from ..utils.io import atomic_path, write_json_atomic, write_text_atomic
from . import get_experiment
from .spec import SCHEMA_VERSION, CellResult, Experiment, ExperimentResult, RunRecord, aggregate
from .table import render_table

PLAN_FILE = "experiment.json"
MAX_JOBS_PER_CORE = 4  # --jobs above this many per core is refused (one process per training)


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an experiment; `directory` is where it continues from (the same command with --out)."""

    def __init__(self, directory: Path):
        super().__init__(f"experiment interrupted; continue with --out {directory}")
        self.directory = directory


@dataclass
class PlannedRun:
    """One training of the plan: a cell's options for one seed, and where its run directory goes."""

    cell: str
    seed: int
    config: dict
    run_dir: Path

    def to_dict(self) -> dict:
        return {"cell": self.cell, "seed": self.seed, "run_dir": str(self.run_dir), "config": self.config}


def parse_sets(items: list[str]) -> dict:
    """--set KEY=VALUE (a TrainConfig option for every run; values parsed as YAML scalars)."""
    import yaml

    from ..train.config import TrainConfig
    from ..utils.safe_yaml import DocumentTooLarge, load_yaml

    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if name not in TrainConfig.field_names() or name in ("out", "seed", "overwrite"):
            why = ("is set per run by the experiment" if name in ("out", "seed", "overwrite")
                   else "is not a training option")
            raise ConfigError(f"--set {item!r}: {name} {why}")
        try:
            out[name] = load_yaml(raw) if raw.strip() else None  # safe, and no alias bombs
        except DocumentTooLarge as exc:
            raise ConfigError(f"--set {name}: {exc}") from None
        except yaml.YAMLError:
            out[name] = raw
    return out


def plan_runs(spec: Experiment, *, experiment_id: str, root: Path, data: str | None, quick: bool, seeds: int,
              overrides: dict, threads: int | None) -> list[PlannedRun]:
    """Every run of the experiment, each config validated now (an impossible option fails before any run)."""
    from ..train.config import TrainConfig

    plan = []
    cells = [c for c in spec.cells if not quick or spec.quick_cells is None or c.key in spec.quick_cells]
    for cell in cells:
        for seed in range(seeds):
            values = {**spec.base, **cell.config, **(spec.quick if quick else {}), **overrides}
            if data is not None:
                values["data"] = data
            if threads is not None and "threads" not in overrides:
                values["threads"] = threads
            run_dir = root / f"{experiment_id}-{cell.key}-s{seed}"
            values.update(seed=seed, out=str(run_dir), quiet=True)
            cfg = TrainConfig.from_dict(values, source=f"experiment {spec.name}, cell {cell.key}").validate()
            plan.append(PlannedRun(cell.key, seed, cfg.to_dict(), run_dir))
    return plan


def _train_one(config: dict, resume: str | None) -> tuple[str, str | None, list[str]]:
    """Train one planned run (in this process or a worker process): (status, detail, notes)."""
    from ..tracking.index import first_line
    from ..train import train
    from ..train.trainer import TrainingDiverged

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        try:
            if resume:
                train(resume=resume, quiet=True, threads=config.get("threads", 0))
            else:
                train(config)
            status, detail = "finished", None
        except TrainingDiverged as exc:
            status, detail = "diverged", first_line(exc)
        except CnnlabError as exc:
            status, detail = "failed", first_line(exc) or type(exc).__name__
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    return status, detail, notes


def _todo(planned: PlannedRun) -> tuple[bool, str | None]:
    """(needs training, resume from): a run with result.json is done; one with a checkpoint resumes."""
    from ..train import checkpoint as ckpt

    d = planned.run_dir
    if (d / "result.json").is_file():
        return False, None
    if (d / "config.yaml").is_file() and ckpt.latest_info(d) is not None:
        return True, str(d)
    return True, None


def run_experiment(name: str, *, data: str | None = None, quick: bool = False, seeds: int | None = None, jobs: int = 1,
                   root: str | Path = "runs", out: str | Path | None = None, overrides: dict | None = None,
                   on_event: Callable[[str, dict], None] | None = None) -> ExperimentResult:
    """Train every run of experiment `name` (cells × `seeds`), `jobs` at a time, and tabulate them.

    `data` replaces the experiments' dataset, `quick` uses tiny data and 1-2 epochs, `overrides` sets
    training options for every run. `on_event(kind, info)` hears "start" / "done" per run (the library
    prints nothing)."""
    from ..runs import check_writable
    from ..tracking.index import RunIndex, host_name, now

    spec = get_experiment(name)
    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {jobs!r}")
    cores = os.cpu_count() or 1
    if jobs > MAX_JOBS_PER_CORE * cores:  # each job is a process holding torch and its data: memory, not just CPU
        from ..utils.limits import short_int

        raise ConfigError(f"--jobs {short_int(jobs)}: more than {MAX_JOBS_PER_CORE} trainings per CPU core at a time "
                          f"(this machine has {cores})")
    root = Path(root)
    check_writable(root, "--root")
    directory = Path(out) if out else root / "experiments" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_writable(directory, "--out")
    options = {"data": data, "quick": quick, "seeds": seeds, "set": dict(overrides or {})}
    if spec.delegate is not None:  # seeds None: the delegate's own default
        return _run_delegate(spec, directory, options, jobs)
    options["seeds"] = seeds = seeds or 1
    experiment_id = directory.name
    plan = _load_or_make_plan(spec, directory, experiment_id, root, options, jobs)
    preflight([p.config for p in plan])
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / PLAN_FILE, {"schema_version": SCHEMA_VERSION, "experiment": name,
                                              "experiment_id": experiment_id, "root": str(root.resolve()),
                                              "options": options, "runs": [p.to_dict() for p in plan]})
    with RunIndex(root) as index:
        index.upsert_experiment(experiment_id, {"name": name, "status": "running", "path": directory.resolve(),
                                                "runs": len(plan), "options": options, "started_at": now(),
                                                "host": host_name(), "pid": os.getpid()})
        for p in plan:
            if _todo(p)[0]:
                index.upsert_run(p.run_dir, {"experiment": experiment_id, "host": host_name(), "pid": os.getpid(),
                                             "model": p.config["model"], "data": p.config["data"], "seed": p.seed,
                                             "config": p.config})
    try:
        _execute(plan, jobs, on_event)
    except KeyboardInterrupt:
        with RunIndex(root) as index:
            index.upsert_experiment(experiment_id, {"name": name, "status": "failed", "path": directory.resolve(),
                                                    "detail": "interrupted: run the same command with --out "
                                                              f"{directory} to continue"})
        raise ExperimentInterrupted(directory) from None
    result = tabulate_experiment(directory)
    with RunIndex(root) as index:
        index.upsert_experiment(experiment_id, {"name": name, "status": "finished", "path": directory.resolve(),
                                                "finished_at": now()})
    return result


def preflight(configs: list[dict]) -> None:
    """What training checks before it claims a run directory, done for every distinct configuration before
    the first run starts: the data reads, the model builds for its images (on the meta device, after the
    padding or resizing training would apply) and fits in memory. A bad --data or model is one error, not
    one failed run per cell."""
    import json

    from ..train.config import TrainConfig
    from ..train.run import check_trainable, fit_input, load_data

    data_keys = ("data", "image_size", "channels", "resize", "data_dir", "offline", "limit_per_class", "pad",
                 "seed")
    datasets: dict[str, object] = {}
    done: set[str] = set()

    def dataset_for(cfg: TrainConfig):
        key = json.dumps({k: getattr(cfg, k) for k in data_keys}, sort_keys=True, default=str)
        if key not in datasets:
            datasets[key] = load_data(cfg)
        return datasets[key]

    for values in configs:
        cfg = TrainConfig.from_dict({k: v for k, v in values.items() if k not in ("out", "seed")}).validate()
        key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        if key in done:
            continue
        done.add(key)
        fitted, _ = fit_input(cfg, dataset_for(cfg))
        check_trainable(fitted, dataset_for(fitted))


def _load_or_make_plan(spec: Experiment, directory: Path, experiment_id: str, root: Path, options: dict,
                       jobs: int) -> list[PlannedRun]:
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    plan = plan_runs(spec, experiment_id=experiment_id, root=root, data=options["data"], quick=options["quick"],
                     seeds=options["seeds"], overrides=options["set"], threads=threads)
    saved = directory / PLAN_FILE
    if saved.is_file():
        from ..runs import read_json

        old = read_json(saved)
        if old.get("experiment") != spec.name or old.get("options") != options:
            raise ConfigError(f"--out {directory}: holds experiment {old.get('experiment')!r} with options "
                              f"{old.get('options')}; choose another --out (or repeat those options to continue it)")
        return [PlannedRun(r["cell"], r["seed"], r["config"], Path(r["run_dir"])) for r in old["runs"]]
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"--out {directory}: directory exists, is not empty and holds no {PLAN_FILE}")
    return plan


def _execute(plan: list[PlannedRun], jobs: int, on_event) -> None:
    todo = [(p, _todo(p)[1]) for p in plan if _todo(p)[0]]
    total, notes_seen = len(plan), set()

    def report(kind: str, p: PlannedRun, **info) -> None:
        if on_event is not None:
            on_event(kind, {"cell": p.cell, "seed": p.seed, "run_dir": str(p.run_dir), "total": total, **info})

    def finished(p: PlannedRun, status: str, detail: str | None, notes: list[str], k: int) -> None:
        for note in notes:
            if note not in notes_seen:
                notes_seen.add(note)
                warnings.warn(note, CnnlabWarning, stacklevel=4)
        report("done", p, status=status, detail=detail, index=k)

    done = total - len(todo)
    if jobs == 1 or len(todo) <= 1:
        for p, resume in todo:
            report("start", p, resumed=resume is not None)
            status, detail, notes = _train_one(p.config, resume)
            done += 1
            finished(p, status, detail, notes, done)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a forked copy of a process that already ran torch's thread pool can deadlock
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for p, resume in todo:
            report("start", p, resumed=resume is not None)
            futures[pool.submit(_train_one, p.config, resume)] = p
        try:
            for fut in as_completed(futures):
                p = futures[fut]
                try:
                    status, detail, notes = fut.result()
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. out of memory) fails its run
                    status, detail, notes = "failed", f"worker process failed: {type(exc).__name__}: {exc}", []
                done += 1
                finished(p, status, detail, notes, done)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def load_records(plan: list[dict], root: Path) -> list[RunRecord]:
    """What each planned run recorded: result.json and metrics.jsonl through cnnlab.runs.Run, status and
    FLOPs from the runs index (status 'missing' for a run directory that is not there)."""
    from ..runs import Run
    from ..tracking.index import RunIndex, index_path

    rows = {}
    if index_path(root).is_file():
        with RunIndex(root, create=False) as index:
            index.refresh_stale()
            for p in plan:
                run_id = index.run_id_of(p["run_dir"])
                if run_id is not None:
                    rows[p["run_dir"]] = index.run(run_id)
    records = []
    for p in plan:
        row = rows.get(p["run_dir"], {})
        record = RunRecord(p["cell"], p["seed"], row.get("run_id") or Path(p["run_dir"]).name, p["run_dir"],
                           "missing", params=row.get("params"), flops=row.get("flops"))
        if Path(p["run_dir"], "config.json").is_file():
            run = Run.open(p["run_dir"])
            record.result, record.metrics = run.result, run.metrics
            record.status = "finished" if record.result is not None else (row.get("status") or "failed")
            if record.status == "failed" and (row.get("detail") or "").startswith("diverged"):
                record.status = "diverged"
            record.detail = row.get("detail")
        elif row:
            record.status, record.detail = row.get("status", "missing"), row.get("detail")
        records.append(record)
    return records


def tabulate_experiment(directory: str | Path) -> ExperimentResult:
    """Tabulate an experiment directory from its recorded runs (no training): the aggregates, table.md,
    results.json and the plot are (re)written. Changing a run's result.json changes the table."""
    from ..runs import read_json

    directory = Path(directory)
    if not (directory / PLAN_FILE).is_file():
        raise ConfigError(f"{directory}: not an experiment directory (no {PLAN_FILE})")
    saved = read_json(directory / PLAN_FILE)
    try:
        spec = get_experiment(saved["experiment"])
        plan, options, root = saved["runs"], saved["options"], Path(saved["root"])
        experiment_id = saved["experiment_id"]
    except (KeyError, TypeError):
        raise ConfigError(f"{directory / PLAN_FILE}: malformed (missing experiment, runs, options or root)") from None
    records = load_records(plan, root)
    cells = []
    for cell in spec.cells:
        runs = [r for r in records if r.cell == cell.key]
        if not runs:
            continue
        result = CellResult(cell, runs)
        for col in spec.columns:
            result.values[col.key] = aggregate([col.measure(r) for r in result.finished_runs])
        cells.append(result)
    result = ExperimentResult(spec.name, spec.title, experiment_id, directory, options, cells, [], "", None,
                              spec.note, spec.lecture)
    result.findings = spec.findings(result) if spec.findings else []
    result.table = render_table(spec, result)
    if spec.plot is not None and any(c.finished_runs for c in cells):
        path = directory / "plot.png"
        with atomic_path(path) as tmp:
            spec.plot(result, tmp)
        result.plot = path
    write_json_atomic(directory / "results.json", _finite(result.to_dict()))
    write_text_atomic(directory / "table.md", result.table)
    return result


def _finite(obj):
    """JSON has no infinity: a threshold never reached is written as null with its meaning kept in 'unreached'."""
    if isinstance(obj, float) and math.isinf(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _run_delegate(spec: Experiment, directory: Path, options: dict, jobs: int) -> ExperimentResult:
    """An experiment another module runs in full (transfer): it writes its own directory and returns table
    rows, its plot and (optionally) its markdown table; table.md and results.json are written here only if
    it did not write them."""
    if jobs > 1:
        warnings.warn(f"the {spec.name} experiment trains one run at a time; --jobs {jobs} does not apply",
                      CnnlabWarning, stacklevel=3)
    rows, plot, table = spec.delegate(data=options["data"], quick=options["quick"], seeds=options["seeds"],
                                      out_dir=directory, train_options=options["set"])
    from .table import rows_to_markdown

    table = f"# {spec.title}\n\n{table or rows_to_markdown(rows)}\n"
    if not (directory / "table.md").is_file():
        write_text_atomic(directory / "table.md", table)
    if not (directory / "results.json").is_file():
        write_json_atomic(directory / "results.json", _finite({"schema_version": SCHEMA_VERSION,
                                                               "experiment": spec.name, "options": options,
                                                               "rows": rows, "plot": str(plot) if plot else None}))
    return ExperimentResult(spec.name, spec.title, directory.name, directory, options, [], [], table,
                            Path(plot) if plot else None, spec.note, spec.lecture)
