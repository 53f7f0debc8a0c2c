"""The runs index (RUNS_ROOT/index.sqlite) and the `cnnlab runs` leaderboard: every run records itself with
what it trained and what it scored (checked against the run's own files and hand counts), a killed run
never shows as finished, concurrent writers lose nothing, old runs import, and bad input is one line."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from cnnlab.cli import main
from one_line import one_line_error
from cnnlab.errors import CnnlabWarning
from cnnlab.tracking.index import RunIndex
from cnnlab.tracking.leaderboard import leaderboard
from cnnlab.train import train

TINY = dict(model="lenet300_linear", epochs=1, limit_per_class=10, threads=1, quiet=True)
REPO = Path(__file__).resolve().parents[1]


def _rows(root) -> dict[str, dict]:
    with RunIndex(root, create=False) as index:
        return {r["run_id"]: r for r in index.runs()}



def test_a_training_run_records_itself_in_its_runs_root(tmp_path):
    out = tmp_path / "somewhere" / "x"
    result = train(**TINY, out=str(out))
    assert (tmp_path / "somewhere" / "index.sqlite").is_file()  # the runs root is the run directory's parent
    row = _rows(tmp_path / "somewhere")["x"]
    on_disk = json.loads((out / "result.json").read_text())
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["status"] == "finished" and row["detail"] is None and row["path"] == str(out.resolve())
    assert (row["model"], row["data"], row["seed"]) == ("lenet300_linear", "digits", 0)
    assert row["params"] == 1024 * 10 + 10        # a 32x32 image flattened into 10 outputs, by hand
    assert row["flops"] == 2 * 1024 * 10            # one multiply-add counts 2 (the lectures' convention)
    assert row["test_accuracy"] == on_disk["test_accuracy"] == result.test_accuracy
    assert row["val_accuracy"] == on_disk["val_accuracy"] and row["test_loss"] == on_disk["test_loss"]
    assert row["train_accuracy"] == last["train_acc"] and row["val_loss"] == last["val_loss"]
    assert row["best_val_accuracy"] == last["val_acc"] and row["epochs"] == row["epochs_planned"] == 1
    assert row["train_seconds"] == on_disk["seconds"] and row["wall_seconds"] == on_disk["wall_seconds"]
    assert row["config"]["limit_per_class"] == 10 and row["pid"] == os.getpid()
    assert row["started_at"] <= row["finished_at"]


class _Stop(Exception):
    run_status = "pruned"  # what a sweep's pruning exception says


@pytest.mark.parametrize("how, status, detail", [
    ("interrupt", "failed", "interrupted"),
    ("diverge", "failed", "diverged: loss became NaN/inf"),
    ("prune", "pruned", "stop here"),
])
def test_a_run_that_stops_is_recorded_as_failed_or_pruned_never_finished(tmp_path, how, status, detail):
    out = tmp_path / "runs" / how

    def hook(trainer, record):
        if how == "interrupt":
            raise KeyboardInterrupt
        raise _Stop("stop here")

    kwargs = dict(TINY, out=str(out))
    if how == "diverge":
        kwargs.update(lr=1e30, schedule="constant", epochs=2)
    with pytest.raises((KeyboardInterrupt, _Stop, Exception)):
        train(**kwargs, hooks=None if how == "diverge" else {"epoch_end": [hook]})
    row = _rows(tmp_path / "runs")[how]
    assert row["status"] == status and row["detail"].startswith(detail), row
    assert row["test_accuracy"] is None and not (out / "result.json").exists()
    if how != "diverge":
        assert row["epochs"] == 1  # the epoch the hook stopped was recorded first


def test_sigkilled_run_shows_running_then_failed_never_finished(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "lenet5", "--epochs", "200", "--threads", "1",
                             "--quiet", "--out", str(root / "victim")], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until it has recorded an epoch
            if (root / "index.sqlite").is_file():
                row = _rows(root).get("victim")
                if row and row["status"] == "running" and row["epochs"]:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.3)
        else:
            pytest.fail("the run did not start within 120 s")
        with RunIndex(root) as index:
            assert index.run("victim")["status"] == "running"
            assert index.refresh_stale() == []  # alive: its lock is held, so it stays running
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with RunIndex(root) as index:
        assert index.run("victim")["status"] == "running"  # nobody has looked yet: not finished
    row = leaderboard(root)[0]  # reading the leaderboard notices the released lock
    assert row["status"] == "failed" and "killed" in row["detail"] and row["test_accuracy"] is None


def _writer(root: str, worker: int, n: int) -> None:
    with RunIndex(root) as index:
        for k in range(n):
            run_dir = Path(root) / f"w{worker}-{k}"
            index.upsert_run(run_dir, {"status": "running", "model": "m", "seed": k, "epochs": 0})
            index.upsert_run(run_dir, {"epochs": 1, "val_accuracy": k / n})
            index.set_status(index.run_id_of(run_dir), "finished")


def test_concurrent_writers_lose_nothing(tmp_path):
    root = tmp_path / "runs"
    RunIndex(root).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(root), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    rows = _rows(root)
    assert len(rows) == 120 and {r["status"] for r in rows.values()} == {"finished"}
    assert all(r["val_accuracy"] == r["seed"] / 40 and r["epochs"] == 1 for r in rows.values())
    conn = sqlite3.connect(root / "index.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _fake(index: RunIndex, name: str, root: Path, **values) -> None:
    cfg = {"lr": values.pop("lr", 0.1), "batch_size": values.pop("batch_size", 32), "model": values.get("model")}
    index.upsert_run(root / name, {"status": "finished", "data": "digits", "config": cfg, **values})


@pytest.fixture
def board(tmp_path):
    root = tmp_path / "runs"
    with RunIndex(root) as index:
        _fake(index, "a", root, model="lenet5", val_accuracy=0.90, test_accuracy=0.95, seed=0, lr=0.1)
        _fake(index, "b", root, model="lenet5", val_accuracy=0.97, test_accuracy=0.91, seed=1, lr=0.01)
        _fake(index, "c", root, model="lenet1", val_accuracy=0.93, test_accuracy=0.99, seed=0, lr=0.05,
              batch_size=64)
        _fake(index, "d", root, model="lenet1", val_accuracy=None, seed=0, status="failed")
    return root


def test_leaderboard_sorts_filters_and_formats(board, capsys):
    assert main(["runs", "--root", str(board), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["b", "c", "a", "d"]  # best validation first, unscored last
    assert main(["runs", "--root", str(board), "--sort", "test_accuracy", "--top", "2", "--format", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["c", "a"]
    assert main(["runs", "--root", str(board), "--where", "lr<0.08", "--model", "lenet5", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run_id"] for r in table] == ["b"] and json.loads(table[0]["config"])["lr"] == 0.01
    assert main(["runs", "--root", str(board), "--where", "batch_size=64", "--format", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["c"]
    assert main(["runs", "--root", str(board), "--status", "failed", "--format", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["d"]
    assert main(["runs", "--root", str(board), "--sort", "lr", "--ascending", "--format", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)][:3] == ["b", "c", "a"]
    assert main(["runs", "--root", str(board)]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "0.9700" in out


def test_show_and_compare(board, capsys):
    assert main(["runs", "show", "b", "--root", str(board), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_accuracy"] == 0.97
    assert main(["runs", "compare", "a", "c", "--root", str(board), "--format", "json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert {d["option"]: (d["a"], d["b"]) for d in diff["config"]} == {
        "lr": (0.1, 0.05), "batch_size": (32, 64), "model": ("lenet5", "lenet1")}
    metrics = {m["metric"]: m for m in diff["metrics"]}
    assert metrics["test_accuracy"]["delta"] == pytest.approx(0.99 - 0.95)
    assert metrics["val_accuracy"]["delta"] == pytest.approx(0.93 - 0.90)
    assert main(["runs", "compare", "a", "c", "--root", str(board)]) == 0
    assert "batch_size" in capsys.readouterr().out
    with RunIndex(board) as index:
        _fake(index, "long-1", board, model="x")
        _fake(index, "long-2", board, model="x")
    assert main(["runs", "show", "long-1", "--root", str(board), "--format", "json"]) == 0  # exact id
    assert json.loads(capsys.readouterr().out)["run_id"] == "long-1"
    assert main(["runs", "show", str(board / "long-2"), "--root", str(board), "--format", "json"]) == 0  # a path
    assert json.loads(capsys.readouterr().out)["run_id"] == "long-2"
    one_line_error(capsys, ["runs", "show", "long", "--root", str(board)], "ambiguous", "long-1, long-2")
    one_line_error(capsys, ["runs", "show", "zzz", "--root", str(board)], "not in")


def test_import_reads_runs_written_without_an_index(tmp_path, monkeypatch, capsys):
    old = tmp_path / "old"
    monkeypatch.setenv("CNNLAB_NO_INDEX", "1")  # as if written before the index existed
    train(**TINY, out=str(old / "done"))
    with pytest.raises(KeyboardInterrupt):
        train(**TINY, out=str(old / "stopped"), hooks={"epoch_end": [lambda t, r: (_ for _ in ()).throw(
            KeyboardInterrupt())]})
    monkeypatch.delenv("CNNLAB_NO_INDEX")
    assert not (old / "index.sqlite").exists()
    (old / "broken").mkdir()
    (old / "broken" / "config.json").write_text("{not json")
    root = tmp_path / "runs"
    assert main(["runs", "import", str(old), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "imported 2 new run(s)" in out and "broken/config.json: not a readable JSON file" in out
    rows = _rows(root)
    done, stopped = rows["done"], rows["stopped"]
    result = json.loads((old / "done" / "result.json").read_text())
    assert done["status"] == "finished" and done["source"] == "import"
    assert done["test_accuracy"] == result["test_accuracy"] and done["params"] == 10250
    assert done["flops"] == 20480
    assert stopped["status"] == "failed" and "resumable" in stopped["detail"] and stopped["epochs"] == 1
    assert main(["runs", "import", str(old / "done"), "--root", str(root)]) == 0
    assert "refreshed 1" in capsys.readouterr().out and len(_rows(root)) == 2  # again: refreshed, not doubled


def test_an_unwritable_index_does_not_stop_training(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(**TINY, out=str(root / "r"))
    assert (root / "r" / "result.json").is_file() and result.test_accuracy > 0
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    assert any("runs index" in n and "not updated" in n for n in notes), notes


def test_bad_input_is_one_line(tmp_path, capsys, board):
    one_line_error(capsys, ["runs", "--root", str(tmp_path / "none")], "no runs index here")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.sqlite").write_bytes(b"garbage" * 200)
    one_line_error(capsys, ["runs", "--root", str(bad)], str(bad / "index.sqlite"), "not a usable runs index")
    one_line_error(capsys, ["runs", "--root", str(board), "--sort", "nope"], "--sort 'nope'")
    one_line_error(capsys, ["runs", "--root", str(board), "--where", "lr"], "--where 'lr'")
    one_line_error(capsys, ["runs", "--root", str(board), "--top", "0"], "--top")
    one_line_error(capsys, ["runs", "import", str(tmp_path / "nowhere"), "--root", str(board)], "no such directory")
    conn = sqlite3.connect(board / "index.sqlite")
    conn.execute("UPDATE cnnlab_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    one_line_error(capsys, ["runs", "--root", str(board)], "schema_version 99 is newer")
