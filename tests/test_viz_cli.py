"""`cnnlab viz` as a user meets it: every picture written under a predictable name in RUN/viz/, images given as
files (prepared as the run's data was) or SPLIT:INDEX, and every bad input one line, exit 2, nothing written."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.runs import Preprocess, Run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cnnlab.train import train

    out = tmp_path_factory.mktemp("viz") / "run"
    train(epochs=2, threads=1, quiet=True, limit_per_class=20, out=str(out))
    return out


def _png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 10, path  # a real picture, not blank
    return img


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_every_picture_lands_under_a_predictable_name(run_dir, capsys):
    v = run_dir / "viz"
    assert main(["viz", "filters", str(run_dir)]) == 0
    assert "6 filters of 1×5×5" in capsys.readouterr().out
    _png(v / "filters-features.0.png")
    assert main(["viz", "filters", str(run_dir), "--layer", "stage1"]) == 0
    _png(v / "filters-features.3.png")
    assert main(["viz", "activations", str(run_dir), "test:3", "--layers", "stem", "features.3"]) == 0
    _png(v / "activations-test-3-stem.png")
    _png(v / "activations-test-3-features.3.png")
    assert main(["viz", "top-patches", str(run_dir), "--layer", "stem", "--units", "4", "--top", "5"]) == 0
    assert "4 units × 5 patches of 6×6 from 40 images" in capsys.readouterr().out  # 2 per class in val
    _png(v / "top-patches-stem.png")
    assert main(["viz", "top-patches", str(run_dir), "--layer", "stem", "--split", "test", "--out",
                 str(v / "mine.png")]) == 0  # the default 8 units on a 6-unit layer: all 6, with a note
    captured = capsys.readouterr()
    assert "note: --units 8: layer 'stem' has 6 units; showing all 6" in captured.err
    assert "6 units × 9 patches of 6×6" in captured.out
    _png(v / "mine.png")
    assert main(["viz", "occlusion", str(run_dir), "test:3", "--patch", "8", "--stride", "4"]) == 0
    _png(v / "occlusion-test-3.png")
    capsys.readouterr()
    assert main(["viz", "gradcam", str(run_dir), "test:3"]) == 0
    captured = capsys.readouterr()
    assert "note: the last stage (stage2) makes 1x1 maps" in captured.err  # LeNet-5's C5; stage1 is used
    _png(v / "gradcam-test-3-stage1.png")
    assert main(["viz", "gradcam", str(run_dir), "test:3", "--layer", "stem", "--class", "7"]) == 0
    assert "class 7" in capsys.readouterr().out
    _png(v / "gradcam-test-3-stem.png")
    assert main(["viz", "saliency", str(run_dir), "test:3"]) == 0
    _png(v / "saliency-test-3-gradient.png")
    assert main(["viz", "saliency", str(run_dir), "test:3", "--method", "integrated-gradients", "--steps", "8"]) == 0
    _png(v / "saliency-test-3-integrated-gradients.png")
    assert main(["viz", "curves", str(run_dir), str(run_dir), "--labels", "a", "b"]) == 0
    _png(v / "curves.png")


def test_an_image_file_is_prepared_as_the_run_prepared_its_data(run_dir, tmp_path):
    from cnnlab.viz.inputs import load_image

    run = Run.open(run_dir)
    ds = run.dataset()
    pixels = ds.test.images[5]
    label = int(ds.test.labels[5])
    folder = tmp_path / run.classes[label]  # ROOT/<class>/<image>: the folder names the true class
    folder.mkdir()
    Image.fromarray(pixels[0].numpy()).save(folder / "digit.png")
    from_file = load_image(run, str(folder / "digit.png"))
    from_split = load_image(run, "test:5", ds)
    assert torch.equal(from_file.pixels, from_split.pixels) and from_file.label == from_split.label == label
    torch.testing.assert_close(from_file.tensor, from_split.tensor)
    loader_x, _ = next(iter(run.loader("test", dataset=ds, batch_size=8)))
    torch.testing.assert_close(from_split.tensor[0], loader_x[5])  # normalised exactly as training did


def test_resize_and_padding_follow_the_runs_preprocessing(tmp_path):
    from cnnlab.viz.inputs import load_image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    run = SimpleNamespace(preprocess=Preprocess((32, 32), 1, "squash", 2, (0.5,), (0.25,)), classes=["a", "b"],
                          config=SimpleNamespace(data="folder"))
    img = load_image(run, str(tmp_path / "x.png"))
    want = np.asarray(Image.fromarray(arr).resize((28, 28), Image.BILINEAR))
    assert img.pixels.shape == (1, 32, 32) and img.label is None
    np.testing.assert_array_equal(img.pixels[0].numpy(), np.pad(want, 2))
    torch.testing.assert_close(img.tensor, (img.pixels[None].float() / 255 - 0.5) / 0.25)


@pytest.fixture
def broken(run_dir, tmp_path):
    """A copy of the run to damage."""
    return shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("viz"))


def test_bad_inputs_are_one_line_errors_that_write_nothing(run_dir, tmp_path, capsys):
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "adir").mkdir()
    not_run = tmp_path / "plain"
    not_run.mkdir()
    r = str(run_dir)
    cases = [
        (["viz", "filters", str(tmp_path / "nope")], "no such run directory"),
        (["viz", "filters", str(not_run)], "not a run directory"),
        (["viz", "filters", r, "--layer", "features.9"], "no such stage or layer"),
        (["viz", "filters", r, "--layer", "features.1"], "not a convolution"),
        (["viz", "filters", r, "--weights", "ema"], "no ema weights"),
        (["viz", "filters", r, "--weights", "latest"], "--weights 'latest'"),
        (["viz", "filters", r, "--out", str(tmp_path / "adir")], "is a directory"),
        (["viz", "filters", r, "--max-filters", "0"], "positive integer"),
        (["viz", "filters", r, "--out", "/proc/cnnlab-filters.png"], "--out /proc/cnnlab-filters.png: cannot write"),
        (["report", r, "--out", "/proc/cnnlab-report.html"], "--out /proc/cnnlab-report.html: cannot write"),
        (["viz", "gradcam", r, str(tmp_path / "nothere.png")], "no such file"),
        (["viz", "gradcam", r, str(tmp_path / "adir")], "is a directory"),
        (["viz", "gradcam", r, str(bad_png)], "undecodable image"),
        (["viz", "gradcam", r, "test:99999"], "holds"),
        (["viz", "gradcam", r, "test:0", "--class", "cat"], "--class 'cat'"),
        (["viz", "gradcam", r, "test:0", "--layer", "nope"], "--layer 'nope'"),
        (["viz", "occlusion", r, "test:0", "--patch", "64"], "larger than the 32x32 image"),
        (["viz", "occlusion", r, "test:0", "--stride", "0"], "positive integer"),
        (["viz", "occlusion", r, "test:0", "--grey", "2"], "[0, 1]"),
        (["viz", "top-patches", r, "--layer", "stem", "--units", "0"], "positive integer"),
        (["viz", "top-patches", r, "--layer", "classifier.1"], "feature maps"),
        (["viz", "top-patches", r, "--layer", "stem", "--data", "nosuchdata"], "unknown data"),
        (["viz", "top-patches", r, "--layer", "stem", "--split", "dev"], "invalid choice"),
        (["viz", "saliency", r, "test:0", "--method", "deeplift"], "invalid choice"),
        (["viz", "curves", r, "--labels", "a", "b"], "2 names for 1 runs"),
        (["viz", "activations", r, "test:0", "--layers", "stage7"], "--layers 'stage7'"),
        (["viz"], "PICTURE"),
        (["report", r, "--image", "nope"], "no such file"),
    ]
    before = _files(run_dir)
    for argv, needle in cases:
        code = _exit_code(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert _files(run_dir) == before  # nothing written, nothing half-written


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the status argparse exits with (errors found while parsing)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("damage, argv, needle", [
    (lambda p: (p / "model.safetensors").write_bytes(b"\x10\x00garbage"), ["viz", "filters"],
     "not a readable safetensors"),
    (lambda p: (p / "model.safetensors").unlink(), ["viz", "filters"], "no final weights"),
    (lambda p: (p / "config.json").write_text("{not json"), ["viz", "filters"], "config.json: not a readable JSON"),
    (lambda p: (p / "metrics.jsonl").write_text("garbage\n"), ["viz", "curves"], "no epoch finished yet"),
    (lambda p: (p / "model.safetensors").write_bytes((Path(__file__).parent / "conftest.py").read_bytes()),
     ["viz", "gradcam", "?", "test:0"], "not a readable safetensors"),
])
def test_a_damaged_run_is_one_line(broken, capsys, damage, argv, needle):
    damage(broken)
    args = [a if a != "?" else str(broken) for a in argv]
    if "?" not in argv:
        args.insert(2, str(broken))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (broken / "viz").exists()


def test_a_real_subprocess_has_no_traceback(run_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "viz", "gradcam", str(run_dir), "test:0", "--layer",
                           "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("cnnlab viz: error: --layer 'nope'")


def test_curves_draw_each_runs_metrics_file(run_dir, tmp_path):
    import json

    from cnnlab.viz.curves import draw_curves, run_curves

    other = shutil.copytree(run_dir, tmp_path / "other", ignore=shutil.ignore_patterns("viz"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    changed = [{**r, "val_acc": r["val_acc"] / 2, "lr": r["lr"] * 10} for r in records]
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    fig = draw_curves([run_curves(Run.open(run_dir), "a"), run_curves(Run.open(other), "b")])
    loss, acc, lr = fig.axes[:3]
    lines = {(ax_name, line.get_label()): line.get_xydata() for ax_name, ax in (("loss", loss), ("acc", acc),
                                                                                ("lr", lr)) for line in ax.lines}
    for label, recs in (("a", records), ("b", changed)):
        epochs = [r["epoch"] for r in recs]
        for ax_name, key in (("loss", "train_loss"), ("loss", "val_loss"), ("acc", "train_acc"), ("acc", "val_acc"),
                             ("lr", "lr")):
            np.testing.assert_allclose(lines[(ax_name, f"{label}: {key.replace('_', ' ')}")],
                                       np.column_stack([epochs, [r[key] for r in recs]]))
    assert "label smoothing 0.1" in loss.get_title()
    assert loss.get_xlabel() == "epoch" and acc.get_ylabel() == "fraction correct"
