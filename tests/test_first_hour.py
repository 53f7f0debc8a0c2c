"""The first hour as a new user, through real subprocesses: the natural commands train, interruptions say how
to continue, and every damaged run directory or unwritable --out is one line, exit 2, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_data_formats import write_mnist

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--epochs", "1", "--threads", "1", "--quiet", "--limit-per-class", "8"]


def cnnlab(*args, cwd=None, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def assert_one_line_error(proc, *needles):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_lenet5_trains_on_28x28_mnist_by_padding_to_32(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    out = tmp_path / "run"
    proc = cnnlab("train", "lenet5", "--data", "mnist", "--data-dir", tmp_path / "mnist", "--offline",
                  "--out", out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    # (random pixels cannot be learned, so a chance-level note may follow; the padding note comes once)
    notes = [line for line in proc.stderr.splitlines() if "note:" in line and "28x28" in line]
    assert len(notes) == 1 and "padded by 2" in notes[0]
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == [32, 32] and config["pad"] == 2 and config["preprocess"]["pad"] == 2
    assert "after 1 epoch," in proc.stdout  # not "1 epochs"


def test_alexnet_on_small_images_is_resized_not_padded(tmp_path):
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.run import fit_input, load_data

    cfg = TrainConfig(model="alexnet", data="digits", limit_per_class=2).validate()
    fitted, note = fit_input(cfg, load_data(cfg))
    assert fitted.image_size == 227 and fitted.pad == 0 and "resized to 227x227" in note
    cfg = TrainConfig(model="lenet5", data="digits", image_size=16).validate()  # 16 -> 32 is too far to pad
    fitted, note = fit_input(cfg, load_data(cfg))
    assert fitted.image_size == 32 and fitted.pad == 0


CHILD = """
import os, signal, sys, time
from cnnlab.train import train
def hook(trainer):
    if trainer.global_step == int(sys.argv[2]):
        os.kill(os.getpid(), getattr(signal, sys.argv[3]))
    time.sleep(0.01)
train(epochs=2, threads=1, quiet=True, limit_per_class=20, out=sys.argv[1], hooks={"step_end": [hook]})
"""


def child(out, step, sig):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", CHILD, str(out), str(step), sig], capture_output=True,
                          text=True, env=env, timeout=240)


def test_a_run_killed_before_its_first_checkpoint_resumes_and_is_not_circular(tmp_path):
    out = tmp_path / "early"
    proc = child(out, 2, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    again = cnnlab("train", "--out", out, "--limit-per-class", "20")
    assert_one_line_error(again, f"--resume {out}")  # the advice names a command that works
    resumed = cnnlab("train", "--resume", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "result.json").is_file() and "after 2 epochs" in resumed.stdout


def test_ctrl_c_names_the_checkpoint_and_the_resume_command(tmp_path):
    out = tmp_path / "int"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ("import os, signal, sys, time\nfrom cnnlab.cli import main\nfrom cnnlab.train import trainer\n"
              "orig = trainer.Trainer.on_step_end\n"
              "def hook(self):\n    orig(self)\n    time.sleep(0.01)\n"
              "    if self.global_step == 3: os.kill(os.getpid(), signal.SIGINT)\n"
              "trainer.Trainer.on_step_end = hook\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "train", "--out", str(out), "--threads", "1", "--quiet",
                           "--limit-per-class", "20"], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 130, proc.stderr
    assert f"checkpoint saved in {out}/checkpoints" in proc.stderr
    assert f"cnnlab train --resume {out}" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["global_step"] == 3


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A run killed in epoch 2, after its epoch-1 checkpoint (copied fresh for each damage)."""
    out = tmp_path_factory.mktemp("ck") / "run"
    proc = child(out, 6, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL and (out / "checkpoints" / "latest.json").is_file()
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_accepts_display_and_placement_options_only(tmp_path, checkpointed):
    run = _copy(checkpointed, tmp_path / "r")
    refused = cnnlab("train", "--resume", run, "--lr", "0.5")
    assert_one_line_error(refused, "--lr", "--quiet, --threads and --device")
    ok = cnnlab("train", "--resume", run, "--quiet", "--threads", "1", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # quiet: no progress bar


def _latest(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "latest.json").read_text())


@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "checkpoints" / "latest.json").write_text('{"weights": "ckpt-0'), "corrupt checkpoint pointer"),
    (lambda run: (run / "checkpoints" / "latest.json").write_text(json.dumps(
        {**_latest(run), "weights": "../../model.safetensors"})), "not a checkpoint file of this run"),
    (lambda run: (run / "checkpoints" / _latest(run)["state"]).unlink(), "missing"),
    (lambda run: (run / "checkpoints" / _latest(run)["state"]).write_bytes(
        (run / "checkpoints" / _latest(run)["state"]).read_bytes()[:300]), "unreadable training state"),
    (lambda run: (run / "checkpoints" / _latest(run)["weights"]).write_bytes(b"\x10\x00"),
     "not a readable safetensors"),
    (lambda run: (run / "config.yaml").write_text("epochs: [\n"), "config.yaml"),
])
def test_resume_of_a_damaged_run_is_one_line_and_changes_nothing(tmp_path, checkpointed, damage, needle):
    run = _copy(checkpointed, tmp_path / "r")
    damage(run)
    before = snapshot(run)
    proc = cnnlab("train", "--resume", run, "--quiet")
    assert_one_line_error(proc, needle)
    assert snapshot(run) == before


def test_resume_drops_a_half_written_metrics_line(tmp_path, checkpointed):
    run = _copy(checkpointed, tmp_path / "r")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo')  # killed while appending epoch 2's record
    proc = cnnlab("train", "--resume", run, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("make_out, needle", [
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "run", "is a file"),
    (lambda tmp: tmp / "file2.txt" if (tmp / "file2.txt").write_text("x") else None, "not a directory"),
    (lambda tmp: Path("/proc/cnnlab-run"), "--out /proc/cnnlab-run"),
])
def test_unwritable_out_is_refused_before_any_work(tmp_path, make_out, needle):
    out = make_out(tmp_path)
    proc = cnnlab("train", "--out", out, *QUICK)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "runs").exists()


def test_notation_runs_get_short_readable_distinct_folder_names(tmp_path):
    a = "conv3-8 > relu > maxpool2 > conv3-16 > relu > maxpool2 > fc32 > relu > fc10"
    b = "conv3-8 > relu > maxpool2 > conv3-16 > relu > maxpool2 > fc64 > relu > fc10"
    from cnnlab.runs import default_run_dir
    from cnnlab.train.config import TrainConfig

    na = default_run_dir(TrainConfig(model=a), tmp_path).name
    nb = default_run_dir(TrainConfig(model=b), tmp_path).name
    assert na != nb and "__" not in na and " " not in na and len(na) <= 80
    assert na.split("-", 2)[2].startswith("conv3-8-relu-maxpool2")
    proc = cnnlab("train", a, "--epochs", "1", "--threads", "1", "--quiet", "--limit-per-class", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (made,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]  # beside runs/index.sqlite
    assert "conv3-8-relu-maxpool2" in made.name and "__" not in made.name


# Kill-and-resume with dropout (global torch RNG) and random augmentation (per-step generators): the resumed
# run must end bit-for-bit where an uninterrupted one does, which needs the RNG state restored.
DROPOUT_NET = "conv5-6 > relu > maxpool2 > conv5-16 > relu > maxpool2 > dropout0.5 > fc64 > relu > dropout0.5 > fc10"
KILL_CHILD = """
import os, signal, sys, time
from cnnlab.train import train
def hook(t):
    time.sleep(0.005)
    if t.global_step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
train(model={net!r}, epochs=2, threads=1, quiet=True, limit_per_class=30, checkpoint_every=4,
      augment="rotate:15,erase@0.5", out=sys.argv[1], hooks={{"step_end": [hook]}})
"""


@pytest.mark.slow
def test_sigkill_and_resume_with_dropout_and_random_augmentation_is_exact(tmp_path):
    from cnnlab.train import train

    kw = dict(model=DROPOUT_NET, epochs=2, threads=1, quiet=True, limit_per_class=30, checkpoint_every=4,
              augment="rotate:15,erase@0.5")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD.format(net=DROPOUT_NET), str(killed), "10"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _latest(killed)["global_step"] == 8 and _latest(killed)["step"] == 2  # mid-epoch 2 (6 steps/epoch)
    train(resume=killed)
    train(**kw, out=str(tmp_path / "ref"))
    a = load_file(str(killed / "model.safetensors"))
    b = load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
