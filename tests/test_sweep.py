"""`cnnlab sweep`: Optuna studies over training options. Trials fill the leaderboard; the median pruner stops
the trials its rule says (checked with numpy's median over the runs' own metrics); a killed sweep resumes its
study; two worker processes on one SQLite study, and two on one PostgreSQL study (a real server), finish
exactly the requested trials between them, none lost and none run twice."""

from __future__ import annotations

import glob
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from cnnlab.cli import main
from one_line import one_line_error
from cnnlab.tracking.leaderboard import leaderboard

REPO = Path(__file__).resolve().parents[1]
NET = "lenet1"  # learns from 200 images at 16x16 in 3 epochs (val ~0.7)
TRAIN = {"model": NET, "image_size": 16, "epochs": 3, "limit_per_class": 20, "threads": 1}


def _write(path: Path, **cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _result(run_dir) -> dict:
    return json.loads((Path(run_dir) / "result.json").read_text())


def _storage(root: Path) -> str:
    return f"sqlite:///{(root / 'index.sqlite').resolve()}"


def _index_rows(root: Path) -> list[dict]:
    conn = sqlite3.connect(root / "index.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM cnnlab_runs")]
    conn.close()
    return rows


@pytest.mark.slow
def test_eight_trials_fill_the_leaderboard_and_the_median_pruner_stops_the_weak(tmp_path, capsys):
    root = tmp_path / "runs"
    cfg = _write(tmp_path / "s.yaml", study="digits8", sampler="random", trials=8, seed=0, pruner="median",
                 pruner_startup_trials=3, pruner_warmup_epochs=0, train=TRAIN,
                 space={"lr": {"low": 1.0e-6, "high": 0.3, "log": True}, "batch_size": [16, 32]})
    assert main(["sweep", "--config", str(cfg), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "study digits8: 8 trials finished (8 here)" in out and (root / "sweeps" / "digits8" / "best.png").is_file()
    study = optuna.load_study(study_name="digits8", storage=_storage(root))
    trials = sorted(study.trials, key=lambda t: t.number)
    S = optuna.trial.TrialState
    assert [t.number for t in trials] == list(range(8)) and {t.state for t in trials} <= {S.COMPLETE, S.PRUNED}
    rows = {r["trial"]: r for r in _index_rows(root) if r["study"] == "digits8"}
    assert sorted(rows) == list(range(8))
    pruned = [t for t in trials if t.state == S.PRUNED]
    assert pruned, "this seed's draws include learning rates too small to learn; some must be pruned"
    for t in trials:
        row, run_dir = rows[t.number], t.user_attrs["run_dir"]
        assert row["path"] == run_dir and row["config"] and json.loads(row["config"])["lr"] == t.params["lr"]
        if t.state == S.COMPLETE:
            assert row["status"] == "finished" and t.value == _result(run_dir)["val_accuracy"]
            assert row["val_accuracy"] == t.value
            continue
        assert row["status"] == "pruned" and not (Path(run_dir) / "result.json").exists()
        # The median rule, recomputed from the runs' own metrics: at the epoch it stopped, this trial's best
        # validation accuracy so far was below the median of the trials completed before it at that epoch.
        mine = _metrics(run_dir)
        epoch = mine[-1]["epoch"]
        earlier = [_metrics(u.user_attrs["run_dir"]) for u in trials if u.state == S.COMPLETE and u.number < t.number]
        assert len(earlier) >= 3
        median = np.median([m[epoch - 1]["val_acc"] for m in earlier])
        assert max(r["val_acc"] for r in mine) < median
    board = leaderboard(root, [("study", "=", "digits8")])
    assert len(board) == 8 and board[0]["val_accuracy"] == max(t.value for t in trials if t.state == S.COMPLETE)


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_study(tmp_path, capsys):
    root = tmp_path / "runs"
    cfg = _write(tmp_path / "s.yaml", study="resume", sampler="random", trials=3, seed=1, pruner="none",
                 heartbeat_interval=1, grace_period=600, train={**TRAIN, "epochs": 40},
                 space={"lr": {"low": 0.01, "high": 0.3, "log": True}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", "--config", str(cfg), "--root", str(root)],
                            env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        # Kill it once trial 1 is training: its first epoch is written and 39 are to come, which on a fast
        # machine is still a second or more, far longer than the 20 ms poll (4 epochs raced a fast CI machine).
        while time.time() < deadline:
            if (root / "resume-t0001" / "metrics.jsonl").is_file():
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        else:
            pytest.fail("trial 1 did not start within 180 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    S = optuna.trial.TrialState
    study = optuna.load_study(study_name="resume", storage=_storage(root))
    killed = next(t for t in study.trials if t.number == 1)
    assert killed.state == S.RUNNING and study.trials[0].state == S.COMPLETE
    # Started again: the dead worker's trial is failed at once (same machine, its process is gone) and queued
    # again with the same parameters, long before the grace period; the study ends with exactly 3 trials done.
    start = time.time()
    assert main(["sweep", "--config", str(cfg), "--root", str(root)]) == 0
    assert time.time() - start < 300
    assert "3 trials finished (2 here)" in capsys.readouterr().out
    study = optuna.load_study(study_name="resume", storage=_storage(root))
    states = {t.number: t.state for t in study.trials}
    assert states == {0: S.COMPLETE, 1: S.FAIL, 2: S.COMPLETE, 3: S.COMPLETE}
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == killed.params and retry.number in (2, 3)
    assert sum(t.params == killed.params for t in study.trials if t.state == S.COMPLETE) == 1  # run once, not twice
    status = {r["run_id"]: r["status"] for r in leaderboard(root)}
    assert status["resume-t0001"] == "failed"  # the killed run: never finished
    assert [status[f"resume-t000{k}"] for k in (0, 2, 3)] == ["finished"] * 3


@pytest.mark.slow
def test_ctrl_c_queues_the_running_trial_again(tmp_path):
    root = tmp_path / "runs"
    cfg = _write(tmp_path / "s.yaml", study="ctrlc", sampler="random", trials=2, pruner="none",
                 train={**TRAIN, "epochs": 200}, space={"lr": {"low": 0.01, "high": 0.3, "log": True}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", "--config", str(cfg), "--root", str(root)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (root / "ctrlc-t0000" / "metrics.jsonl").is_file():
            assert proc.poll() is None and time.time() < deadline, "trial 0 did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "queued again" in err and "Traceback" not in err, err
    S = optuna.trial.TrialState
    trials = optuna.load_study(study_name="ctrlc", storage=_storage(root)).trials
    assert [t.state for t in trials] == [S.FAIL, S.WAITING] and trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == 0
    assert leaderboard(root)[0]["detail"].startswith("interrupted")


def _two_workers(cfg: Path, roots: list[Path], storage: str | None) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    extra = ["--storage", storage] if storage else []
    procs = [subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", "--config", str(cfg), "--root", str(r),
                               *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in roots]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return outs


def _check_shared_study(cfg: Path, storage: str, roots: list[Path], grid: dict) -> None:
    S = optuna.trial.TrialState
    if storage.startswith("postgresql://"):  # the driver installed here (SQLAlchemy's default is psycopg 3)
        storage = "postgresql+psycopg2://" + storage[len("postgresql://"):]
    study = optuna.load_study(study_name=yaml.safe_load(cfg.read_text())["study"], storage=storage)
    trials = study.trials
    n = len(list(itertools.product(*grid.values())))
    assert sorted(t.number for t in trials) == list(range(n)) and all(t.state == S.COMPLETE for t in trials)
    points = sorted(tuple(t.params[k] for k in grid) for t in trials)
    assert points == sorted(itertools.product(*grid.values()))  # every grid point once: none lost, none twice
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers took trials
    rows = [r for root in roots for r in _index_rows(root)]
    assert sorted(r["trial"] for r in rows) == list(range(n)) and {r["status"] for r in rows} == {"finished"}
    for t in trials:
        assert t.value == _result(t.user_attrs["run_dir"])["val_accuracy"]


GRID = {"lr": [0.03, 0.1, 0.3], "batch_size": [16, 32]}


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    root = tmp_path / "runs"
    cfg = _write(tmp_path / "g.yaml", study="shared", sampler="grid", pruner="none", train={**TRAIN, "epochs": 2},
                 space=GRID)
    done = _two_workers(cfg, [root, root], None)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    assert all("6 trials finished" in d.stdout for d in done)
    _check_shared_study(cfg, _storage(root), [root], GRID)


@pytest.fixture(scope="session")
def postgres_server():
    """CNNLAB_TEST_POSTGRES_URL (set by .ci/run), else a throwaway cluster started here as .ci/run does, else
    skip with the reason."""
    url = os.environ.get("CNNLAB_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) and no CNNLAB_TEST_POSTGRES_URL")
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' system user to run initdb as, and no CNNLAB_TEST_POSTGRES_URL")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting a PostgreSQL cluster needs root and runuser (runuser -u postgres); set "
                    "CNNLAB_TEST_POSTGRES_URL")
    pg_bin = bins[-1]
    base = tempfile.mkdtemp(prefix="cnnlab-pg.")
    os.chown(base, pg.pw_uid, pg.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*run, f"{pg_bin}/initdb", "-D", f"{base}/data", "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True)
        subprocess.run([*run, f"{pg_bin}/pg_ctl", "-D", f"{base}/data", "-l", f"{base}/log", "-w", "-o",
                        f"-h 127.0.0.1 -p {port} -k {base}", "start"], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL cluster: {exc.stderr.decode()[-300:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run, f"{pg_bin}/pg_ctl", "-D", f"{base}/data", "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh database on the server for one test (dropped after)."""
    import psycopg2

    name = f"cnnlab_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.slow
def test_two_workers_on_two_roots_share_one_postgresql_study(tmp_path, postgres_db):
    roots = [tmp_path / "machine-a" / "runs", tmp_path / "machine-b" / "runs"]  # as if on two machines
    cfg = _write(tmp_path / "g.yaml", study="pg-shared", sampler="grid", pruner="none", train={**TRAIN, "epochs": 2},
                 space=GRID)
    done = _two_workers(cfg, roots, postgres_db)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    _check_shared_study(cfg, postgres_db, roots, GRID)


@pytest.mark.slow
def test_sweep_plot_draws_best_so_far_per_sampler(tmp_path, capsys):
    root = tmp_path / "runs"
    space = {"lr": [0.01, 0.1], "batch_size": [16, 32]}
    train = {**TRAIN, "epochs": 2}
    grid = _write(tmp_path / "grid.yaml", study="lr-grid", sampler="grid", pruner="none", train=train, space=space)
    rand = _write(tmp_path / "rand.yaml", study="lr-random", sampler="random", trials=3, pruner="none", train=train,
                  space=space)
    for cfg in (grid, rand):
        assert main(["sweep", "--config", str(cfg), "--root", str(root)]) == 0
    capsys.readouterr()
    png = tmp_path / "grid-vs-random.png"
    assert main(["sweep", "plot", "--root", str(root), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 5000
    for name, sampler, n in (("lr-grid", "grid", 4), ("lr-random", "random", 3)):
        study = optuna.load_study(study_name=name, storage=_storage(root))
        best = max(_result(t.user_attrs["run_dir"])["val_accuracy"] for t in study.trials)
        assert f"{name} ({sampler}): {n} trials finished, best val_accuracy {best:.4f}" in out
    from cnnlab.experiments.sweep_plots import best_so_far

    study = optuna.load_study(study_name="lr-grid", storage=_storage(root))
    ordered = [_result(t.user_attrs["run_dir"])["val_accuracy"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert best_so_far(study) == (list(range(1, 5)), list(np.maximum.accumulate(ordered)))



@pytest.mark.parametrize("cfg, needle", [
    ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
    ({"space": {"nope": [1, 2]}}, "space.nope: not a training option"),
    ({"space": {"lr": {"low": 0.5, "high": 0.1}}}, "low (0.5) must be below high (0.1)"),
    ({"space": {"batch_size": [16, 0]}}, "space.batch_size = 0: batch-size must be a positive integer"),
    ({"space": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "a log range needs low > 0"),
    ({"sampler": "grid", "space": {"lr": {"low": 0.01, "high": 0.1}}}, "a grid needs a list"),
    ({"space": {"epochs": {"low": 1.5, "high": 3}}}, "integer option"),
    ({"trials": 0}, "trials must be a positive integer"),
    ({"metric": "test_accuracy"}, "metric must be val_accuracy"),
    ({"train": {"out": "x"}}, "out is set per trial"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"storage": "mysql://x/y"}, "expected sqlite:///PATH or postgresql://"),
    ({"train": {**TRAIN, "data": "/nowhere/missing.npz"}}, "missing.npz"),
    ({"space": {"model": ["lenet1", "nope"]}}, "unknown model 'nope'"),
    ({"storage": "postgresql://nobody@127.0.0.1:1/none"}, "cannot open the study storage"),
])
def test_bad_sweep_files_are_one_line(tmp_path, capsys, cfg, needle):
    base = {"study": "s", "sampler": "random", "trials": 2, "train": TRAIN, "space": {"lr": [0.1]}}
    path = _write(tmp_path / "s.yaml", **{**base, **cfg})
    one_line_error(capsys, ["sweep", "--config", str(path), "--root", str(tmp_path / "runs")], needle)
    assert not (tmp_path / "runs").exists()  # checked before any trial: no study, no index


def test_sweep_command_line_errors(tmp_path, capsys):
    one_line_error(capsys, ["sweep", "--root", str(tmp_path)], "give --config FILE")
    one_line_error(capsys, ["sweep", "--config", str(tmp_path / "missing.yaml")], "missing.yaml")
    one_line_error(capsys, ["sweep", "plot", "--root", str(tmp_path / "none")], "no such file")
    cfg = _write(tmp_path / "s.yaml", study="s", sampler="random", trials=1, train=TRAIN, space={"lr": [0.1]})
    one_line_error(capsys, ["sweep", "--config", str(cfg), "--trials", "0"], "--trials")
