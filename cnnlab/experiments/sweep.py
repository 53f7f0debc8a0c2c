"""Hyperparameter sweeps with Optuna: `run_sweep(SweepConfig)` is one worker of a study.

Storage: by default the study lives in the runs root's index.sqlite (Optuna's RDB tables beside the runs
index's own); `storage="postgresql://USER@HOST/DB"` puts it in PostgreSQL, so that workers on several
machines share it — Optuna's documented way of distributing a study: start the same command on each.

Exactly `trials` trials finish, all workers together, none lost and none run twice:
- a worker claims a trial under a study-wide lock (a file lock beside the SQLite file; a PostgreSQL advisory
  lock): it counts the finished and running trials and asks Optuna for a new one only while they fall short;
- a running trial sends heartbeats; one silent for `grace_period` seconds (its worker was killed) is failed and
  queued again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback), and so is a trial whose
  worker on this machine is gone, at once — so a killed sweep, started again, resumes its study;
- a worker leaves only when `trials` trials have finished (complete, pruned, or failed for a reason of their
  own such as a diverging loss).

Each trial is an ordinary training run in the runs root (RUNS_ROOT/<study>-t<NNNN>), on the leaderboard with
its study and trial number; the median pruner stops it after an epoch whose validation accuracy is below the
median of the earlier trials at that epoch (status pruned)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import optuna

from ..errors import CnnlabError, ConfigError
from ..tracking.index import RunIndex, first_line, host_name, pid_alive
from .sweep_config import SweepConfig

POLL_S = 2.0  # how often a worker waiting for the others' last trials looks again


class SweepPruned(optuna.TrialPruned):
    """The median pruner stopped a trial (raised from the training hook; the runs index records pruned)."""

    run_status = "pruned"


@dataclass
class SweepOutcome:
    study: str
    storage: str
    finished: int
    ran_here: list[int]
    best: dict | None


def default_storage(root: str | Path) -> str:
    return f"sqlite:///{(Path(root) / 'index.sqlite').resolve()}"


def make_storage(url: str, cfg: SweepConfig) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats and retry of stale trials; a one-line error for a bad URL."""
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg2://")):
        raise ConfigError(f"--storage {url!r}: expected sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB")
    if url.startswith("postgresql"):
        url = _postgres_driver(url)
        engine = {"pool_pre_ping": True}
    else:
        engine = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings(), _setup_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=cfg.heartbeat_interval,
                grace_period=cfg.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors: unreachable server, bad file
        first = first_line(exc) or type(exc).__name__
        raise ConfigError(f"--storage {_safe_url(url)}: cannot open the study storage ({first})") from None


@contextlib.contextmanager
def _setup_lock(url: str) -> Iterator[None]:
    """Workers starting together on an empty database would create Optuna's tables at the same time and
    collide ("table studies already exists"): they take turns, under a file lock beside a SQLite file or a
    PostgreSQL advisory lock."""
    if url.startswith("sqlite:///"):
        with _file_lock(Path(url[len("sqlite:///"):]).parent / ".sweep-setup.lock"):
            yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            key = zlib.crc32(b"cnnlab-sweep-setup")
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def _postgres_driver(url: str) -> str:
    """postgresql://… with the driver that is installed: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg
    (version 3); cnnlab's `postgres` extra installs psycopg2."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    if url.startswith("postgresql+psycopg2://") and importlib.util.find_spec("psycopg2") is None:
        raise ConfigError("--storage postgresql://…: needs psycopg2 (pip install 'cnnlab[postgres]')")
    return url


def _safe_url(url: str) -> str:
    """The URL without a password."""
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if needed), held for the block."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the sweep's lock file ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def study_lock(url: str, study: str, storage: optuna.storages.RDBStorage) -> Iterator[None]:
    """A lock all workers of `study` share: flock on a file beside a SQLite database (its workers are on one
    machine), a PostgreSQL session advisory lock otherwise."""
    if url.startswith("sqlite:///"):
        with _file_lock(Path(url[len("sqlite:///"):]).parent / f".sweep-{zlib.crc32(study.encode()):08x}.lock"):
            yield
        return
    from sqlalchemy import text

    key = zlib.crc32(f"cnnlab-sweep:{study}".encode())
    with storage.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for an ask-and-tell loop. Its after_trial calls study.stop() once the grid is
    covered, which only works inside study.optimize; the sweep loop stops by counting trials instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def build_sampler(cfg: SweepConfig, worker: int) -> optuna.samplers.BaseSampler:
    """The sampler of worker number `worker`: random and TPE draw from seed + 1000·worker, so concurrent
    workers do not repeat each other; the grid keeps the one seed, because it maps trial numbers to grid
    points through its seeded shuffle and every worker must map them alike."""
    if cfg.sampler == "grid":
        return _GridSampler({p.name: p.grid() for p in cfg.params}, seed=cfg.seed)
    seed = cfg.seed + 1000 * worker
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, cfg.n_trials // 3)))


def build_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                       n_warmup_steps=cfg.pruner_warmup_epochs)


def suggest(trial: optuna.Trial, cfg: SweepConfig) -> dict:
    values = {}
    for p in cfg.params:
        if p.kind == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return values


def tally(study: optuna.Study) -> dict[str, int]:
    """done (complete, pruned, or failed for a reason of its own), running, waiting (queued for a retry)."""
    S = optuna.trial.TrialState
    out = {"done": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (S.COMPLETE, S.PRUNED) or (t.state == S.FAIL and "cnnlab_error" in t.user_attrs):
            out["done"] += 1
        elif t.state == S.RUNNING:
            out["running"] += 1
        elif t.state == S.WAITING:
            out["waiting"] += 1
    return out


def fail_dead_trials(study: optuna.Study) -> None:
    """Stale trials: by heartbeat (Optuna), and at once those whose worker on this machine is gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        storage = study._storage
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("host") == host_name() and not pid_alive(t.user_attrs.get("pid")):
                try:
                    storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another worker got there first
                _retry(study, t._trial_id)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None, state=None) -> bool:
    """study.tell, unless the trial is already finished (then False)."""
    if study._storage.get_trial(trial._trial_id).state.is_finished():
        return False
    study.tell(trial, value, state=state)
    return True


def _retry(study: optuna.Study, trial_id: int) -> None:
    """Queue a failed trial again with its parameters (at most 3 times), as Optuna does for stale ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study._storage.get_trial(trial_id))


def _heartbeat(storage, trial_id: int, interval: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # noqa: BLE001 - a missed heartbeat is retried; the grace period allows several
            pass
        stop.wait(interval)


def run_sweep(cfg: SweepConfig, *, root: str | Path = "runs", storage: str | None = None,
              on_event: Callable[[str, dict], None] | None = None) -> SweepOutcome:
    """Work on study `cfg.study` until `cfg.n_trials` trials have finished (by any worker)."""
    from .runner import preflight

    root = Path(root)
    preflight([cfg.trial_config({p.name: v}).to_dict() for p in cfg.params
               for v in (p.choices if p.kind == "categorical" else (p.low, p.high))])
    url = storage or cfg.storage or default_storage(root)
    if url.startswith("sqlite:///"):
        with RunIndex(root):  # create the runs index (WAL mode) before Optuna adds its tables to the same file
            pass
    store = make_storage(url, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with study_lock(url, cfg.study, store):
            study = optuna.create_study(study_name=cfg.study, storage=store, direction="maximize",
                                        load_if_exists=True)
            _check_same_study(study, cfg, url)
            worker = int(study.user_attrs.get("cnnlab_workers", 0))
            study.set_user_attr("cnnlab_workers", worker + 1)
        sampler = build_sampler(cfg, worker)
        study = optuna.load_study(study_name=cfg.study, storage=store, sampler=sampler, pruner=build_pruner(cfg))
    ran = []
    with RunIndex(root) as index:
        while True:
            with study_lock(url, cfg.study, store):
                fail_dead_trials(study)
                counts = tally(study)
                if counts["done"] >= cfg.n_trials:
                    break
                trial = None
                if counts["waiting"] or counts["done"] + counts["running"] < cfg.n_trials:
                    trial = study.ask()
                    trial.set_user_attr("host", host_name())
                    trial.set_user_attr("pid", os.getpid())
            if trial is None:
                if on_event:
                    on_event("wait", counts)
                time.sleep(POLL_S)
                continue
            _run_trial(study, trial, cfg, root, index, on_event)
            ran.append(trial.number)
    best = None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        b = max(complete, key=lambda t: t.value)
        best = {"trial": b.number, "value": b.value, "params": b.params, "run_dir": b.user_attrs.get("run_dir")}
    return SweepOutcome(cfg.study, _safe_url(url), tally(study)["done"], ran, best)


def _check_same_study(study: optuna.Study, cfg: SweepConfig, url: str) -> None:
    """A study is resumed only with the sampler and search space it was started with."""
    mine = {"sampler": cfg.sampler, "space": cfg.space, "train": cfg.train, "trials": cfg.n_trials}
    saved = study.user_attrs.get("cnnlab_sweep")
    if saved is None:
        study.set_user_attr("cnnlab_sweep", mine)
        return
    for key in ("sampler", "space", "train"):
        if saved.get(key) != mine[key]:
            raise ConfigError(f"study {cfg.study!r} in {_safe_url(url)} was started with another {key} "
                              f"({saved.get(key)!r}); resume it with the same file or give a new study name")
    if saved.get("trials") != mine["trials"]:
        study.set_user_attr("cnnlab_sweep", mine)  # asking for more (or fewer) trials is fine


def _run_trial(study: optuna.Study, trial: optuna.Trial, cfg: SweepConfig, root: Path, index: RunIndex,
               on_event) -> None:
    from ..runs import Run
    from ..train import train

    S = optuna.trial.TrialState
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(study._storage, trial._trial_id, cfg.heartbeat_interval, stop),
                            daemon=True)
    beat.start()
    run_dir = root / f"{cfg.study}-t{trial.number:04d}"
    try:
        values = suggest(trial, cfg)
        tcfg = cfg.trial_config(values).replace(out=str(run_dir), quiet=True, overwrite=True)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        index.upsert_run(run_dir, {"study": cfg.study, "trial": trial.number, "model": tcfg.model, "data": tcfg.data,
                                   "seed": tcfg.seed, "config": tcfg.to_dict(), "host": host_name(),
                                   "pid": os.getpid()})
        if on_event:
            on_event("start", {"trial": trial.number, "params": values, "run_dir": str(run_dir)})

        def prune(trainer, record: dict) -> None:
            trial.report(record["val_acc"], record["epoch"])
            if trial.should_prune():
                raise SweepPruned(f"pruned after epoch {record['epoch']}: validation accuracy "
                                  f"{record['val_acc']:.4f} below the median of earlier trials")

        train(tcfg, hooks={"epoch_end": [prune]})
        value = Run.open(run_dir).result["val_accuracy"]  # the objective, as the run recorded it
        _tell(study, trial, value)
        state, detail = S.COMPLETE, f"val_accuracy {value:.4f}"
    except optuna.TrialPruned as exc:
        _tell(study, trial, state=S.PRUNED)
        state, detail = S.PRUNED, str(exc)
    except CnnlabError as exc:  # a diverging loss, an option the model does not take: a result, counted
        detail = first_line(exc) or type(exc).__name__
        trial.set_user_attr("cnnlab_error", detail)
        _tell(study, trial, state=S.FAIL)
        state = S.FAIL
    except BaseException:  # Ctrl-C, a crash: not this trial's fault; queue it again and stop
        if _tell(study, trial, state=S.FAIL):
            _retry(study, trial._trial_id)
        raise
    finally:
        stop.set()
        beat.join()
    if on_event:
        on_event("done", {"trial": trial.number, "state": state.name.lower(), "detail": detail,
                          "run_dir": str(run_dir)})
