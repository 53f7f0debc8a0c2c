"""Two processes on one run directory never interleave their writes: the second is refused through the run's
lock (RUN/.lock, an flock), not by luck, and a holder killed with SIGKILL leaves no stuck lock. The races are
forced: a child takes the lock (or starts training and is held inside its first epoch) and waits on a pipe
while the second process is started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_bad_inputs import assert_refused, cnnlab, snapshot

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("--epochs", "1", "--threads", "1", "--quiet", "--limit-per-class", "8")

# Takes RUN/.lock exactly as cnnlab.runs.run_lock does, says so, then waits until its stdin closes.
HOLDER = r"""
import sys
from cnnlab.runs import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""

# Trains, and inside its first epoch (after it claimed the run and wrote its config) says "running" and waits
# for a line on stdin before going on: a training process caught in the middle of its run.
RUNNER = r"""
import sys
from cnnlab.train import train
def hold(trainer):
    if trainer.global_step == 2:
        print("running", flush=True)
        sys.stdin.readline()
train(epochs=2, threads=1, quiet=True, limit_per_class=8, out=sys.argv[1], overwrite=True,
      hooks={"step_end": [hold]})
"""


def _start(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc


def _wait_for(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline().strip()
    assert line == word, (line, proc.stderr.read() if proc.poll() is not None else "")


@pytest.fixture()
def finished_run(tmp_path):
    from cnnlab.train import train

    out = tmp_path / "run"
    train(epochs=1, threads=1, quiet=True, limit_per_class=8, out=str(out))
    return out


def test_a_second_process_is_refused_by_the_lock_and_a_killed_holder_leaves_none(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = _start(HOLDER, run)
    try:
        _wait_for(holder, "locked")
        before = snapshot(tmp_path)
        # The folder holds only the lock file, so only the lock can stop this one (and --overwrite would
        # clear a non-empty folder: the lock is checked before).
        for extra in ((), ("--overwrite",)):
            proc = cnnlab("train", "--out", run, *QUICK, *extra, cwd=tmp_path)
            assert_refused(proc, "train", [str(run), "another cnnlab process is writing this run"])
        assert snapshot(tmp_path) == before
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases its flock
        holder.wait()
        proc = cnnlab("train", "--out", run, *QUICK, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (run / "result.json").is_file()
    finally:
        holder.kill()
        holder.wait()


def test_two_resumes_of_one_run_the_second_is_refused(tmp_path, finished_run):
    (finished_run / "result.json").unlink()
    holder = _start(HOLDER, finished_run)
    try:
        _wait_for(holder, "locked")
        before = snapshot(finished_run)
        proc = cnnlab("train", "--resume", finished_run, "--quiet", cwd=tmp_path)
        assert_refused(proc, "train", ["another cnnlab process is writing this run"])
        assert snapshot(finished_run) == before
    finally:
        holder.kill()
        holder.wait()
    proc = cnnlab("train", "--resume", finished_run, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_resume_or_a_second_out_while_the_original_still_trains_is_refused(tmp_path):
    run = tmp_path / "run"
    first = _start(RUNNER, run)
    try:
        _wait_for(first, "running")  # in its first epoch, config written, lock held
        written = snapshot(run)
        assert "config.json" in {str(k) for k in written}
        resume = cnnlab("train", "--resume", run, "--quiet", cwd=tmp_path)
        assert_refused(resume, "train", ["another cnnlab process is writing this run"])
        again = cnnlab("train", "--out", run, "--overwrite", *QUICK, cwd=tmp_path)
        assert_refused(again, "train", ["another cnnlab process is writing this run"])
        assert snapshot(run) == written  # neither wrote a byte
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.wait(timeout=600) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # one writer: every epoch once, in order


def test_a_resume_after_the_original_was_killed_mid_run_proceeds(tmp_path):
    run = tmp_path / "run"
    first = _start(RUNNER, run)
    try:
        _wait_for(first, "running")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.wait()
    proc = cnnlab("train", "--resume", run, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
