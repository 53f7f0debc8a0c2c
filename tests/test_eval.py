"""`cnnlab eval` / evaluate_run on small trained runs: scores checked against independent computations
(the training loop's own scoring, hand-counted confusion matrices, a hand-worked ECE, per-image
predictions through a different decoding path), classes mapped by name on other data, ensembles, and
every bad input as one line with exit 2 through a real subprocess."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import ConfigError, DataError
from cnnlab.eval.metrics import expected_calibration_error, reliability_bins
from cnnlab.eval.report import evaluate_run, render_report
from cnnlab.runs import Run
from cnnlab.train import evaluate, train

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(epochs=2, threads=1, quiet=True)


def cnnlab(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_one_line_error(proc, *needles):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """LeNet-5 on the digits, 2 epochs (about 96% test accuracy: a dozen errors to analyse)."""
    out = tmp_path_factory.mktemp("eval") / "digits"
    train(**QUICK, out=str(out))
    return Run.open(out)


def _save_pngs(folder: Path, images: torch.Tensor, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(img[0].numpy()).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def abc_runs(tmp_path_factory):
    """A run trained on an image folder of classes a, b, c (digits 0, 1, 2), and a second folder of other
    digit images with classes a, c and an unknown d (digit 3) but no b."""
    from cnnlab.data import load_dataset

    root = tmp_path_factory.mktemp("abc")
    digits = load_dataset("digits")
    pool = torch.cat([digits.train.images, digits.val.images, digits.test.images])
    labels = torch.cat([digits.train.labels, digits.val.labels, digits.test.labels])
    for name, digit in (("a", 0), ("b", 1), ("c", 2)):
        _save_pngs(root / "train" / name, pool[labels == digit][:40], "t")
    for name, digit, n in (("a", 0, 15), ("c", 2, 15), ("d", 3, 5)):
        _save_pngs(root / "other" / name, pool[labels == digit][40:40 + n], "o")
    train(**QUICK, data=str(root / "train"), out=str(root / "run"))
    return Run.open(root / "run"), root / "other"


def test_eval_reproduces_the_training_score_and_the_shared_evaluate(digits_run):
    report = evaluate_run(digits_run)
    result = digits_run.result
    assert report.count == result["test_count"] == len(digits_run.dataset().test)
    assert report.top1 == result["test_accuracy"]  # exactly: same weights, images and normalisation
    shared = evaluate(digits_run.model(), digits_run.loader("test"))
    assert report.loss == pytest.approx(shared["loss"], rel=1e-5)
    assert report.top5 == pytest.approx(shared["top5"]) and report.top5_k == 5
    assert report.files == {} and report.members == []


def test_confusion_and_per_class_scores_against_a_hand_count(digits_run):
    report = evaluate_run(digits_run)
    model = digits_run.model()
    with torch.no_grad():
        pairs = [(model(x).argmax(1), y) for x, y in digits_run.loader("test", batch_size=50)]
    pred = torch.cat([p for p, _ in pairs]).numpy()
    true = torch.cat([y for _, y in pairs]).numpy()
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (true, pred), 1)
    assert (report.confusion == expected).all()
    assert (report.confusion.sum(1) == np.bincount(true, minlength=10)).all()  # rows sum to class counts
    for k, row in enumerate(report.per_class):
        hits = expected[k, k]
        assert row["support"] == expected[k].sum()
        assert row["accuracy"] == pytest.approx(hits / expected[k].sum())
        assert row["recall"] == pytest.approx(hits / expected[k].sum())
        precision = hits / expected[:, k].sum() if expected[:, k].sum() else 0.0
        assert row["precision"] == pytest.approx(precision)
        f1 = 2 * precision * row["recall"] / (precision + row["recall"]) if precision + row["recall"] else 0.0
        assert row["f1"] == pytest.approx(f1)
    accs = [r["accuracy"] for r in report.per_class]
    assert report.easiest[0]["accuracy"] == max(accs) and report.hardest[0]["accuracy"] == min(accs)
    assert len(report.easiest) == len(report.hardest) == 5
    wrong = [w for w in report.confident_wrong]
    assert len(wrong) == min(16, int((pred != true).sum()))
    assert all(w["true"] != w["pred"] for w in wrong)
    assert [w["prob"] for w in wrong] == sorted((w["prob"] for w in wrong), reverse=True)
    assert all(pred[w["index"]] == int(w["pred"]) and true[w["index"]] == int(w["true"]) for w in wrong)


def test_ece_matches_a_hand_worked_example():
    # Guo et al.'s definition with 15 bins: 4 samples at confidence 0.9 with 3 right (|0.75 - 0.9| = 0.15) and
    # 2 at 0.65, both right (|1 - 0.65| = 0.35): ECE = 4/6 * 0.15 + 2/6 * 0.35 = 0.21667
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.35, 0.65]] * 2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    bins = reliability_bins(probs, labels)
    assert expected_calibration_error(bins) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.35)
    full = [b for b in bins if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in full] == [(2, 1.0), (4, 0.75)]
    assert full[0]["lo"] < 0.65 <= full[0]["hi"] and full[1]["lo"] < 0.9 <= full[1]["hi"]
    assert full[0]["hi"] - full[0]["lo"] == pytest.approx(1 / 15)


def test_files_csv_pngs_and_json(digits_run, tmp_path):
    report = evaluate_run(digits_run, out_dir=tmp_path / "ev")
    assert set(report.files) >= {"confusion_csv", "confusion_png", "wrong_png", "reliability_png"}
    with open(report.files["confusion_csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == digits_run.classes
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == report.confusion.tolist()
    for key in ("confusion_png", "wrong_png", "reliability_png"):
        with Image.open(report.files[key]) as im:
            assert im.format == "PNG" and min(im.size) > 200
    saved = json.loads(report.files["report_json"].read_text())
    assert saved["schema_version"] == 1 and saved["top1"] == report.top1
    assert saved["confusion"] == report.confusion.tolist()
    assert not [p for p in (tmp_path / "ev").iterdir() if p.name.startswith(".")]  # no temp files left
    text = render_report(report)
    assert "top-1 accuracy" in text and "hardest classes" in text and "confusion matrix" in text


def test_ensemble_of_a_model_with_itself_equals_the_model(digits_run):
    alone = evaluate_run(digits_run)
    pair = evaluate_run(digits_run, ensemble=[digits_run.path])
    assert pair.top1 == alone.top1 and (pair.confusion == alone.confusion).all()
    assert pair.loss == pytest.approx(alone.loss, abs=1e-6)
    assert [m["top1"] for m in pair.members] == [alone.top1, alone.top1]


@pytest.fixture(scope="module")
def snap_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "snap"
    train(**QUICK, snapshots=2, out=str(out))
    return Run.open(out)


def test_snapshot_ensemble_matches_the_training_loop(snap_run):
    run = snap_run
    report = evaluate_run(run, weights="snapshots")
    assert report.top1 == run.result["ensemble_test_accuracy"]  # the trainer's own ensemble average
    assert [m["name"] for m in report.members] == ["snap/snapshot:1", "snap/snapshot:2"]
    for member, k in zip(report.members, (1, 2)):
        assert member["top1"] == evaluate(run.model(f"snapshot:{k}"), run.loader("test"))["top1"]


def test_an_ensemble_averages_probabilities(snap_run):
    from cnnlab.eval.ensemble import load_members, member_specs, predict_split

    members = load_members(member_specs(snap_run, "snapshots"))
    log_probs, preds = predict_split(members, snap_run.dataset().test, batch_size=100)
    with torch.no_grad():
        probs = [torch.cat([snap_run.model(f"snapshot:{k}")(x).softmax(1) for x, _ in snap_run.loader("test")])
                 for k in (1, 2)]
    assert torch.allclose(log_probs.exp(), (probs[0] + probs[1]) / 2, atol=1e-6)  # the arithmetic mean
    assert torch.equal(preds, torch.stack([p.argmax(1) for p in probs]))


def test_snapshots_without_snapshots_is_one_line(digits_run):
    with pytest.raises(ConfigError, match="kept no snapshots"):
        evaluate_run(digits_run, weights="snapshots")


def test_other_data_lacking_a_class_is_scored_against_the_right_labels(abc_runs):
    from cnnlab.eval.predict import predict_images

    run, other = abc_runs
    assert run.classes == ["a", "b", "c"]
    report = evaluate_run(run, data=str(other))
    # Oracle: each file's class from its folder name; the prediction through the image-file path.
    files = sorted(p for d in ("a", "c") for p in (other / d).glob("*.png"))
    pred = predict_images(run, files, topk=1)
    truth = [f.parent.name for f in files]
    guessed = [top[0][0] for top in pred.top]
    assert report.count == 30
    assert report.top1 == pytest.approx(np.mean([t == g for t, g in zip(truth, guessed)]))
    idx = {c: i for i, c in enumerate(run.classes)}
    expected = np.zeros((3, 3), dtype=np.int64)
    for t, g in zip(truth, guessed):
        expected[idx[t], idx[g]] += 1
    assert (report.confusion == expected).all()
    assert report.confusion[idx["b"]].sum() == 0 and report.per_class[idx["b"]]["accuracy"] is None
    notes = " | ".join(report.notes)
    assert "no images of 1 of the run's 3 classes: b" in notes
    assert "skipped: d (5)" in notes
    assert "all 35 of its images are evaluated" in notes
    assert report.top5_k == 3 and report.top5 == 1.0 and "capped at top-3" in notes


def test_the_training_data_written_differently_is_still_the_runs_own(abc_runs):
    run, _ = abc_runs
    same = evaluate_run(run, data=run.config.data + "/./")  # the training folder: its test split, not all of it
    assert same.count == len(run.dataset().test) == evaluate_run(run).count and same.notes == [
        "top-5 is capped at top-3: the run has only 3 classes (so it is 100% by definition)"]


def test_other_data_without_any_shared_class_is_refused(abc_runs, tmp_path):
    run, _ = abc_runs
    folder = tmp_path / "xyz"
    _save_pngs(folder / "x", torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "z")
    with pytest.raises(DataError, match="none of its classes"):
        evaluate_run(run, data=str(folder))


def test_cli_eval_writes_its_files_into_the_run(digits_run):
    proc = cnnlab("eval", digits_run.path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["top1"] == digits_run.result["test_accuracy"]
    folder = digits_run.path / "eval" / "test-final"
    assert {p.name for p in folder.iterdir()} == {"confusion.csv", "confusion.png", "confident_wrong.png",
                                                  "reliability.png", "report.json"}


def test_cli_bad_inputs_are_one_line(digits_run, abc_runs, tmp_path):
    broken = tmp_path / "no-weights"
    shutil.copytree(digits_run.path, broken, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    (broken / "model.safetensors").unlink()
    assert_one_line_error(cnnlab("eval", broken), "no final weights")
    assert not (broken / "eval").exists()
    assert_one_line_error(cnnlab("eval", digits_run.path, "--tta", "rotate"), "unknown test-time augmentation",
                          "flip, 5crop, 10crop, multiscale")
    run_abc, _ = abc_runs
    assert_one_line_error(cnnlab("eval", digits_run.path, "--ensemble", run_abc.path), "classes", "differ")
    assert_one_line_error(cnnlab("eval", tmp_path / "nowhere"), "no such run directory")


def test_fuse_bn_gives_the_unfused_predictions_through_fewer_layers(tmp_path):
    # A BN net trained 2 epochs: its BNs have real running statistics to fold. PyTorch's own BatchNorm2d
    # (the unfused run) is the oracle; the fused evaluation must agree image by image.
    net = "conv3-8 > bn > relu > maxpool2 > conv3-16 > bn > relu > maxpool2 > fc10"
    train(**QUICK, model=net, image_size=16, out=str(tmp_path / "bn"))
    run = Run.open(tmp_path / "bn")
    plain, fused = evaluate_run(run), evaluate_run(run, fuse_bn=True)
    assert plain.top1 > 0.8  # a trained net, so agreement is not two chance-level guesses
    assert fused.top1 == plain.top1 and np.array_equal(fused.confusion, plain.confusion)
    assert fused.loss == pytest.approx(plain.loss, abs=1e-5)
    assert "--fuse-bn folded 2 BatchNorm layer(s)" in " ".join(fused.notes)
    assert not any("fuse-bn" in n for n in plain.notes)
    proc = cnnlab("eval", tmp_path / "bn", "--fuse-bn", "--format", "json", "--out", tmp_path / "e")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1"] == plain.top1
