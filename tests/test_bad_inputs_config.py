"""The bad-input corpus, part 2: options, config files, models in notation, resources, the environment and
names. Each table case runs the real CLI in a subprocess (see test_bad_inputs.run_case): exit 2, one line
naming the file or option and the problem, no traceback, nothing written, nothing executed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_bad_inputs import (Case, Evil, assert_refused, cnnlab, marker_of, params, run_case,
                             snapshot)

TRAIN = ("train", "--out", "{d}/run", "--epochs", "1", "--quiet", "--threads", "1", "--limit-per-class", "5")
CONF = ("train", "--config", "{d}/c.yaml", "--out", "{d}/run")
NET = "conv3-4 > relu > fc10"


def text(name: str, content: str | bytes):
    def make(d: Path) -> None:
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return make


def laughs(levels: int = 9, key: str = "model_opts") -> str:
    """The billion-laughs document: 9 aliases per level, 9 levels (9^9 ~ 387M strings once expanded),
    under `key` so that the keys are valid and the bomb reaches a value."""
    lines = [f"{key}:", '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\naugment: *l{levels - 1}\n"


def python_tag(d: Path) -> None:
    (d / "c.yaml").write_text(f"lr: !!python/object/apply:os.system ['touch {marker_of(d)}']\n")


def npy(name: str, array):
    def make(d: Path) -> None:
        np.save(d / name, array, allow_pickle=True)
    return make


def npy_payload(d: Path) -> None:
    arr = np.empty(1, dtype=object)
    arr[0] = Evil(marker_of(d))
    np.save(d / "k.npy", arr, allow_pickle=True)


CONFIG_CASES = [
    Case("config-unknown-key", CONF, ("c.yaml", "unknown key 'learning_rate'"), text("c.yaml", "learning_rate: 0.1\n")),
    Case("config-wrong-type", CONF, ("c.yaml", "epochs expects int", "'ten'"), text("c.yaml", "epochs: ten\n")),
    Case("config-wrong-type-long-value-is-shortened", CONF, ("c.yaml", "lr expects float", "…"),
         text("c.yaml", "lr: [" + ",".join(["1"] * 20000) + "]\n")),
    Case("config-python-tag-never-constructed", CONF, ("c.yaml", "could not determine a constructor",
                                                       "python/object/apply"), python_tag),
    Case("config-billion-laughs", CONF, ("c.yaml", "alias bomb", "100,000"), text("c.yaml", laughs())),
    Case("config-json-nested-too-deep", ("train", "--config", "{d}/c.json", "--out", "{d}/run"),
         ("c.json", "nested too deeply"), text("c.json", '{"lr": ' + "[" * 100000 + "]" * 100000 + "}")),
    Case("config-yaml-nested-too-deep", CONF, ("c.yaml", "nested too deeply"),
         text("c.yaml", "lr: " + "[" * 100000 + "]" * 100000 + "\n")),
    Case("config-is-a-device", ("train", "--config", "/dev/zero", "--out", "{d}/run"),
         ("/dev/zero", "not a regular file")),
    Case("config-is-a-directory", ("train", "--config", "{d}", "--out", "{d}/run"), ("is a directory",)),
    Case("config-too-large", CONF, ("c.yaml", "too large for a config file"),
         text("c.yaml", "# padding\n" * 500_000 + "lr: 0.1\n")),
    Case("config-top-level-list", CONF, ("c.yaml", "expected a mapping"), text("c.yaml", "- lr: 0.1\n")),
    Case("config-two-documents", CONF, ("c.yaml", "not valid YAML"), text("c.yaml", "lr: 0.1\n---\nlr: 0.2\n")),
    Case("config-missing", CONF, ("c.yaml", "cannot read config file")),
    Case("config-not-utf8", CONF, ("c.yaml", "UTF-8"), text("c.yaml", b"\xff\xfe\x00\x81lr: 1")),
    Case("model-opt-alias-bomb", TRAIN + ("--model-opt", "act=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,"
                                                          "*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &e [*c,*c,*c,"
                                                          "*c,*c,*c,*c,*c,*c,*c], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"),
         ("--model-opt act", "alias bomb")),
    Case("model-opt-not-key-value", TRAIN + ("--model-opt", "relu"), ("--model-opt expects KEY=VALUE",)),
    Case("model-opt-unknown", TRAIN + ("--model-opt", "colour=red"), ("has no option 'colour'",)),
    # numbers, checked when the options are parsed (before any data is read or folder written)
    Case("label-smoothing-above-1", TRAIN + ("--label-smoothing", "1.5"), ("label-smoothing must be in [0, 1)",)),
    Case("ema-decay-1", TRAIN + ("--ema", "--ema-decay", "1"), ("ema-decay must be in (0, 1)",)),
    Case("dropout-1", TRAIN + ("lenet5", "--dropout", "1.0"), ("dropout must be in [0, 1)",)),
    Case("warmup-negative", TRAIN + ("--warmup-epochs", "-1"), ("warmup-epochs must be >= 0",)),
    Case("clip-grad-negative", TRAIN + ("--clip-grad", "-1"), ("clip-grad must be >= 0",)),
    Case("weight-decay-minus-infinity", TRAIN + ("--weight-decay=-inf",), ("weight-decay must be",)),
    Case("batch-size-0", TRAIN + ("--batch-size", "0"), ("batch-size must be a positive integer",)),
    Case("epochs-negative", TRAIN + ("--epochs", "-3"), ("epochs must be a positive integer",)),
    Case("lr-0", TRAIN + ("--lr", "0"), ("lr must be a positive number",)),
    Case("pad-negative", TRAIN + ("--pad", "-2"), ("pad must be an integer in [0, 1024]",)),
    Case("threads-negative", TRAIN + ("--threads", "-1"), ("threads must be >= 0",)),
    Case("nan-check-every-0", TRAIN + ("--nan-check-every", "0"), ("nan-check-every must be a positive",)),
    Case("snapshots-not-dividing-epochs", TRAIN + ("--epochs", "5", "--snapshots", "2"),
         ("epochs (5) must be a multiple of snapshots (2)",)),
    Case("ema-eval-without-ema", TRAIN + ("--ema-eval",), ("--ema-eval needs --ema",)),
    Case("epochs-not-a-number", TRAIN + ("--epochs", "ten"), ("--epochs", "invalid int value")),
    Case("lr-nan", TRAIN + ("--lr", "nan"), ("--lr", "finite")),
    Case("lr-inf", TRAIN + ("--lr", "inf"), ("--lr", "finite")),
    Case("exp-gamma-negative-is-gradient-ascent", TRAIN + ("--schedule", "exponential", "--exp-gamma",
                                                                       "-0.5"), ("exp-gamma",)),
    Case("gamma-above-1", TRAIN + ("--schedule", "step", "--gamma", "1.5"), ("gamma",)),
    Case("momentum-1", TRAIN + ("--momentum", "1.0"), ("momentum",)),
    Case("seed-beyond-64-bits", TRAIN + ("--seed", str(2**70)), ("seed",)),
    Case("limit-per-class-0", TRAIN + ("--limit-per-class", "0"), ("limit-per-class",)),
]

MODEL_CASES = [
    Case("notation-bad-token", TRAIN + ("conv3-4 > relu > florp > fc10",), ("bad token 'florp' at position 3",)),
    Case("notation-trailing-separator", ("summary", "conv3-4 > relu >", "--input", "1x8x8"),
         ("empty token",)),
    Case("unknown-model", TRAIN + ("lenet6",), ("unknown model 'lenet6'", "did you mean")),
    Case("notation-width-needs-petabytes", TRAIN + ("conv3-99999999 > fc10",),
         ("conv3-99999999 > fc10", "would need", "TiB", "refused before allocating")),
    Case("notation-fc-width-needs-terabytes", TRAIN + ("fc2000000000 > fc10",), ("fc2000000000", "would need")),
    Case("lr-find-width-needs-terabytes", ("lr-find", "conv3-99999999 > fc10", "--steps", "10", "--plot",
                                           "{d}/lr.png", "--limit-per-class", "5"), ("would need", "TiB")),
    Case("input-too-small-for-the-network", TRAIN + ("conv5-6p0 > conv5-6p0 > conv5-6p0 > fc10", "--image-size",
                                                     "8"), ("conv5-6p0' at position 2", "the input is too small")),
    Case("summary-bad-input-size", ("summary", "lenet5", "--input", "1x0x32"), ("--input must be CxHxW",)),
    Case("summary-num-classes-0", ("summary", "lenet5", "--num-classes", "0"), ("--num-classes must be positive",)),
    Case("summary-unknown-model", ("summary", "vgg17"), ("unknown model 'vgg17'",)),
    Case("summary-notation-too-small", ("summary", "conv5-6p0 > maxpool2 > conv5-6p0", "--input", "1x8x8"),
         ("the input is too small",)),
    Case("compare-one-model", ("compare", "lenet5"), ("compare needs exactly two models",)),
    Case("compare-bad-input", ("compare", "lenet5", "lenet1", "--input", "big"), ("--input must be CxHxW",)),
    Case("models-unknown-family", ("models", "--family", "transformers"), ("unknown family 'transformers'",)),
    Case("explain-num-classes-0", ("explain", "lenet5", "--num-classes", "0", "--html", "{d}/p.html"),
         ("--num-classes must be positive",)),
    Case("explain-image-missing", ("explain", "lenet5", "x.png", "--html", "{d}/p.html"), ("x.png: no such file",)),
]

RESOURCE_CASES = [
    Case("image-size-needs-terabytes", TRAIN + ("--image-size", "100000"),
         ("100,000x100,000 (--image-size)", "TiB", "refused before allocating")),
    Case("data-show-image-size-needs-terabytes", ("data", "show", "digits", "--image-size", "1000000", "--out",
                                                  "{d}/s.png"), ("(--image-size)", "would need")),
    Case("conv-padding-needs-exabytes", ("conv", "--input", "1 2; 3 4", "--kernel", "1", "--padding", "1000000000"),
         ("--padding 1,000,000,000", "zero-padded input", "4e+18 values")),
    Case("conv-padding-beyond-any-int", ("conv", "--input", "1 2; 3 4", "--kernel", "1", "--padding", "9" * 40),
         ("--padding 1e+40",)),
    Case("conv-too-many-multiply-adds", ("conv", "--input", "{d}/x.npy", "--kernel", "{d}/k.npy"),
         ("multiply-adds", "300,000"), lambda d: (np.save(d / "x.npy", np.ones((200, 200))),
                                                  np.save(d / "k.npy", np.ones((9, 9))))),
    Case("explain-conv-padding-needs-exabytes", ("explain", "conv", "--input", "1 2; 3 4", "--kernel", "1",
                                                 "--padding", "1000000000", "--html", "{d}/p.html"),
         ("zero-padded input",)),
    Case("conv-matrix-file-too-large", ("conv", "--input", "{d}/x.txt", "--kernel", "1"),
         ("x.txt", "too large for a matrix file"), text("x.txt", "1 " * 3_000_000)),
    Case("conv-npy-object-array-needs-pickle", ("conv", "--input", "{d}/k.npy", "--kernel", "1"),
         ("k.npy", "not a readable .npy array"), npy_payload),
    Case("conv-npy-nan", ("conv", "--input", "{d}/n.npy", "--kernel", "1"), ("every value must be a finite number",),
         npy("n.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))),
    Case("conv-npy-complex", ("conv", "--input", "{d}/c.npy", "--kernel", "1"), ("array of numbers",),
         npy("c.npy", np.array([[1 + 2j, 0], [0, 1]]))),
    Case("conv-json-nested-too-deep", ("conv", "--input", "{d}/k.json", "--kernel", "1"),
         ("k.json", "nested too deeply"), text("k.json", "[" * 100000 + "]" * 100000)),
    Case("conv-kernel-larger-than-input", ("conv", "--input", "1 2; 3 4", "--kernel", "1 1 1; 1 1 1; 1 1 1"),
         ("--kernel 1", "too small")),
    Case("lr-find-single-class", ("lr-find", NET, "--data", "{d}/one.npz", "--steps", "10", "--plot", "{d}/lr.png"),
         ("one.npz", "a single class"),
         lambda d: np.savez(d / "one.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.zeros(20, np.int64))),
]


@pytest.mark.parametrize("case", params(CONFIG_CASES + MODEL_CASES + RESOURCE_CASES))
def test_bad_option_or_file_is_refused_in_one_line(case, tmp_path):
    run_case(case, tmp_path)


# --- the environment: folders that cannot be written, a disk that fills ---------------------------------------

def _can_mount() -> bool:
    return os.geteuid() == 0 and os.path.exists("/proc/filesystems") and \
        "tmpfs" in Path("/proc/filesystems").read_text()


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A small tmpfs at `path` (root only): a disk that really fills, or a folder that really cannot be
    written (root bypasses permission bits, not a read-only mount)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    with contextlib.ExitStack() as stack:
        if _can_mount():  # root writes through permission bits: a read-only mount is what stops it
            parent = stack.enter_context(tmpfs(tmp_path / "ro", "1m", readonly=True))
        else:
            parent = tmp_path / "ro"
            parent.mkdir()
            os.chmod(parent, 0o555)
            stack.callback(os.chmod, parent, 0o755)
        proc = cnnlab("train", "--out", parent / "run", "--epochs", "1", "--quiet", cwd=tmp_path)
        assert_refused(proc, "train", [f"--out {parent}/run", "cannot be written"])
        assert not list(parent.iterdir()) and not (tmp_path / "runs").exists()


def test_unreadable_dataset_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any folder")
    (tmp_path / "d" / "a").mkdir(parents=True)
    os.chmod(tmp_path / "d", 0)
    try:
        proc = cnnlab("data", "show", tmp_path / "d", "--out", tmp_path / "s.png", cwd=tmp_path)
        assert_refused(proc, "data", [str(tmp_path / "d")])
    finally:
        os.chmod(tmp_path / "d", 0o755)


# --- names -------------------------------------------------------------------------------------------------------

def test_a_notation_longer_than_a_file_name_trains_and_is_summarised(tmp_path):
    net = " > ".join(["conv3-4 > relu"] * 40 + ["fc10"])  # 641 characters: over the 255 a file name may have
    assert len(net) > 255
    first = cnnlab("train", net, "--epochs", "1", "--quiet", "--threads", "1", "--limit-per-class", "5",
                   "--image-size", "8", cwd=tmp_path)
    second = cnnlab("train", net, "--epochs", "1", "--quiet", "--threads", "1", "--limit-per-class", "5",
                    "--image-size", "8", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())  # (and the runs index beside them)
    assert len(runs) == 2 and runs[0].name != runs[1].name  # unique, even within the same second
    assert all(len(r.name) <= 80 and " " not in r.name and ">" not in r.name for r in runs)
    summary = cnnlab("summary", runs[0], "--format", "json", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["layers"][0]["name"].startswith("features.0")
    assert json.loads((runs[0] / "config.json").read_text())["model"] == net  # the full notation is kept


def test_snapshot_sees_a_changed_file(tmp_path):
    # The "nothing written" check compares snapshots: it must notice a new file, a changed byte and a link.
    (tmp_path / "a").write_bytes(b"x")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"y")
    assert snapshot(tmp_path) != before
    (tmp_path / "a").write_bytes(b"x")
    os.symlink("a", tmp_path / "l")
    assert snapshot(tmp_path) != before
