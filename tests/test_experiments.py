"""`cnnlab experiment`: every experiment runs end to end with --quick, its table has the experiment's shape,
and every number in it is the one its recorded runs hold (result.json, metrics.jsonl, the runs index) —
recomputed here from those files, and followed when a run's file changes."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.experiments import get_experiment

FAST = ["--set", "threads=1"]


def _run(capsys, tmp_path, name, *extra, plot: bool = True) -> tuple[dict, str, Path]:
    out = tmp_path / "exp"
    assert main(["experiment", "run", name, "--root", str(tmp_path / "runs"), "--out", str(out), *FAST, *extra]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    table = (out / "table.md").read_text()
    assert table in printed
    assert (out / "plot.png").stat().st_size > 5000 if plot else not (out / "plot.png").exists()
    return results, table, out


def _oracle(key: str, run_dir: Path, root: Path):
    """A column's number read straight from the run's files (not through cnnlab.experiments)."""
    result = json.loads((run_dir / "result.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if key == "test_error":
        return 100 * (1 - result["test_accuracy"])
    if key == "val_error":
        return 100 * (1 - result["val_accuracy"])
    if key == "train_error":
        return 100 * (1 - epochs[-1]["train_acc"])
    if key == "params":
        return result["params"]
    if key == "train_seconds":
        return result["seconds"]
    if key == "images_per_s":
        return result["images_per_s"]
    if key == "mflops":
        conn = sqlite3.connect(root / "index.sqlite")
        flops = conn.execute("SELECT flops FROM cnnlab_runs WHERE path = ?", (str(run_dir.resolve()),)).fetchone()[0]
        conn.close()
        return flops / 1e6
    if key.startswith("epochs_"):
        threshold = float(key.split("_", 1)[1])
        return next((float(e["epoch"]) for e in epochs if 100 * (1 - e["train_acc"]) <= threshold), math.inf)
    raise AssertionError(f"no oracle for column {key}")


def _metric_lines(run_dir) -> list[str]:
    return (Path(run_dir) / "metrics.jsonl").read_text().splitlines()


def _check_shape_and_numbers(name: str, results: dict, table: str, root: Path, seeds: int = 1) -> None:
    spec = get_experiment(name)
    cells = [c.key for c in spec.cells if spec.quick_cells is None or c.key in spec.quick_cells]
    assert [c["key"] for c in results["cells"]] == cells
    lines = [line for line in table.splitlines() if line.startswith("|")]
    published = [col for col in spec.columns if any(col.key in c.published for c in spec.cells if c.key in cells)]
    header = lines[0].strip("|").split("|")
    assert len(header) == 1 + len(spec.columns) + len(published) and len(lines) == 2 + len(cells)
    for cell, line in zip(results["cells"], lines[2:]):
        assert line.startswith(f"| {cell['label']} |")
        assert len(cell["runs"]) == seeds, cell["runs"]
        # Every run finished, except that a net without BN at a high learning rate may diverge: that is the
        # batchnorm experiment's own finding, recorded as such (and its numbers are then not tabulated).
        assert all(r["status"] == "finished" or (name == "batchnorm" and r["status"] == "diverged")
                   for r in cell["runs"]), cell["runs"]
        if any(r["status"] != "finished" for r in cell["runs"]):
            assert "diverged" in line
            continue
        for col in spec.columns:
            expected = [_oracle(col.key, Path(r["path"]), root) for r in cell["runs"]]
            got = cell["values"][col.key]
            finite = [v for v in expected if not math.isinf(v)]
            if not finite:
                assert got["mean"] is None and got["unreached"] == len(expected)  # JSON null: never reached
                assert "not reached" in line
                continue
            assert got["mean"] == pytest.approx(statistics.fmean(finite), rel=1e-12)
            if len(finite) == len(expected):
                assert got["values"] == pytest.approx(expected, rel=1e-12)
            if len(finite) > 1:
                assert got["std"] == pytest.approx(statistics.stdev(finite), rel=1e-12)
            assert f"{statistics.fmean(finite):,.{col.digits}f}" in line
        for col in published:
            value = spec.cell(cell["key"]).published.get(col.key)
            assert value is None or str(value) in line


@pytest.mark.slow
def test_lenet_table_quick_conv_lenets_beat_the_output_layer_alone_and_follow_their_runs(tmp_path, capsys):
    results, table, out = _run(capsys, tmp_path, "lenet-table", "--quick")
    root = tmp_path / "runs"
    _check_shape_and_numbers("lenet-table", results, table, root)
    err = {c["key"]: c["values"]["test_error"]["mean"] for c in results["cells"]}
    assert err["lenet1"] < err["lenet300_linear"] and err["lenet5"] < err["lenet300_linear"]
    assert "convolutional LeNets beat the FC output layer alone" in table
    assert "| LeNet-5: 2 conv (6 + 16 F) + 3 FC |" in table and "| 0.95 |" in table  # the lectures' figure beside
    # Every run is on the leaderboard, labelled with the experiment.
    conn = sqlite3.connect(root / "index.sqlite")
    rows = conn.execute("SELECT experiment, status FROM cnnlab_runs").fetchall()
    exp = conn.execute("SELECT status, runs FROM cnnlab_experiments").fetchall()
    conn.close()
    assert rows == [("exp", "finished")] * 5 and exp == [("finished", 5)]
    # The table follows the recorded runs: change one result.json and re-tabulate.
    lenet5 = next(Path(r["path"]) for c in results["cells"] if c["key"] == "lenet5" for r in c["runs"])
    result = json.loads((lenet5 / "result.json").read_text())
    (lenet5 / "result.json").write_text(json.dumps({**result, "test_accuracy": 0.5}))
    assert main(["experiment", "table", str(out)]) == 0
    assert "| LeNet-5: 2 conv (6 + 16 F) + 3 FC | 61,706 | 50.00 | 0.95 |" in capsys.readouterr().out
    assert "50.00" in (out / "table.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["augmentation", "relu-vs-tanh", "ablation", "plain-vs-residual", "batchnorm",
                                  "depthwise"])
def test_every_experiment_runs_quick_and_its_numbers_come_from_its_runs(tmp_path, capsys, name):
    results, table, _ = _run(capsys, tmp_path, name, "--quick")
    _check_shape_and_numbers(name, results, table, tmp_path / "runs")
    assert results["experiment"] == name and results["options"]["quick"] is True
    if name == "relu-vs-tanh":  # the threshold column is only checked where some run crossed it
        assert any(c["values"]["epochs_25"]["mean"] is not None for c in results["cells"])
    if name == "batchnorm":  # the last epoch's training error, not the first's
        assert all(len(_metric_lines(r["path"])) == 2 for c in results["cells"] for r in c["runs"]
                   if r["status"] == "finished")


@pytest.mark.slow
def test_seeds_give_mean_and_std_and_jobs_train_in_parallel_processes(tmp_path, capsys):
    results, table, out = _run(capsys, tmp_path, "depthwise", "--quick", "--seeds", "2", "--jobs", "2",
                               "--set", "limit_per_class=8")
    root = tmp_path / "runs"
    _check_shape_and_numbers("depthwise", results, table, root, seeds=2)
    assert "mean ± standard deviation over 2 seeds" in table and " ± " in table
    conn = sqlite3.connect(root / "index.sqlite")
    pids = {p for (p,) in conn.execute("SELECT pid FROM cnnlab_runs").fetchall()}
    seeds = sorted(s for (s,) in conn.execute("SELECT seed FROM cnnlab_runs").fetchall())
    conn.close()
    import os

    assert seeds == [0, 0, 1, 1] and os.getpid() not in pids and len(pids) == 2  # two worker processes
    # Continuing: a run that lost its result resumes from its checkpoint; the others are kept as they are.
    victim = Path(results["cells"][0]["runs"][1]["path"])
    kept = Path(results["cells"][1]["runs"][0]["path"])
    (victim / "result.json").unlink()
    stamp = (kept / "result.json").stat().st_mtime_ns
    assert main(["experiment", "run", "depthwise", "--quick", "--seeds", "2", "--jobs", "2", "--root", str(root),
                 "--out", str(out), *FAST, "--set", "limit_per_class=8"]) == 0
    err = capsys.readouterr().err
    assert err.count("start ") == 1 and "(resuming)" in err
    assert (victim / "result.json").is_file() and (kept / "result.json").stat().st_mtime_ns == stamp


def test_a_diverging_cell_is_reported_as_such(tmp_path, capsys):
    results, table, _ = _run(capsys, tmp_path, "depthwise", "--quick", "--set", "limit_per_class=4",
                             "--set", "lr=1e30", "--set", "schedule=constant", "--set", "epochs=2",
                             plot=False)
    assert [c["outcome"] for c in results["cells"]] == ["diverged", "diverged"]
    assert "| standard 3x3 convolutions | diverged |" in table
    conn = sqlite3.connect(tmp_path / "runs" / "index.sqlite")
    details = [d for (d,) in conn.execute("SELECT detail FROM cnnlab_runs").fetchall()]
    conn.close()
    assert all(d.startswith("diverged: loss became NaN/inf") for d in details)


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    base = ["experiment", "run"]
    _one_line_error(capsys, [*base, "nope", "--root", str(root)], "unknown experiment 'nope'", "lenet-table")
    _one_line_error(capsys, [*base, "lenet-table", "--seeds", "0", "--root", str(root)], "--seeds")
    _one_line_error(capsys, [*base, "lenet-table", "--jobs", "0", "--root", str(root)], "--jobs")
    _one_line_error(capsys, [*base, "lenet-table", "--set", "nope=1", "--root", str(root)], "not a training option")
    _one_line_error(capsys, [*base, "lenet-table", "--set", "seed=3", "--root", str(root)], "set per run")
    _one_line_error(capsys, [*base, "lenet-table", "--set", "epochs=0", "--root", str(root)], "epochs")
    _one_line_error(capsys, [*base, "lenet-table", "--data", str(tmp_path / "missing.npz"), "--root", str(root)],
                    "missing.npz")
    assert not root.exists()
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, [*base, "lenet-table", "--root", str(tmp_path / "file")], "--root")
    _one_line_error(capsys, ["experiment", "table", str(tmp_path)], "not an experiment directory")
    other = tmp_path / "other"
    other.mkdir()
    (other / "something").write_text("x")
    _one_line_error(capsys, [*base, "lenet-table", "--root", str(root), "--out", str(other)], "not empty")
    assert not root.exists()


def test_transfer_is_handed_to_cnnlab_transfer(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cnnlab.transfer"
                        else real(name, *a))
    _one_line_error(capsys, ["experiment", "run", "transfer", "--root", str(tmp_path / "runs")],
                    "the transfer experiment needs cnnlab.transfer")


def test_list_names_every_experiment(capsys):
    assert main(["experiment", "list", "--format", "json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert names == ["lenet-table", "augmentation", "relu-vs-tanh", "ablation", "plain-vs-residual", "batchnorm",
                     "depthwise", "transfer"]
