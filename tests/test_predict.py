"""`cnnlab predict` on image files: the run's preprocessing (a test image saved as a file gets the class
`eval` scored for it), the documented conversions (colour to grey, other sizes as in training), folders to
CSV, the exported-ONNX path that runs in onnxruntime without importing torch, and bad inputs."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import DataError
from cnnlab.eval.export import export_run
from cnnlab.eval.predict import predict_images
from cnnlab.eval.report import evaluate_run
from cnnlab.runs import Run
from cnnlab.train import train

ROOT = Path(__file__).resolve().parents[1]


def cnnlab(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trained digits run, its evaluation, its ONNX export, and test images saved as PNG files."""
    root = tmp_path_factory.mktemp("predict")
    train(epochs=2, threads=1, quiet=True, out=str(root / "run"))
    run = Run.open(root / "run")
    report = evaluate_run(run)
    export_run(run, "onnx", root / "model.onnx", parity_images=16)
    test = run.dataset().test
    wrong = report.confident_wrong[0]
    right = next(i for i in range(len(test)) if i not in {w["index"] for w in report.confident_wrong})
    files = {}
    for tag, index in (("wrong", wrong["index"]), ("right", right)):
        files[tag] = root / f"{tag}.png"
        Image.fromarray(test.images[index, 0].numpy()).save(files[tag])
    return {"run": run, "report": report, "onnx": root / "model.onnx", "files": files, "root": root,
            "wrong": wrong, "right_class": run.classes[int(test.labels[right])], "test": test, "right": right}


def test_a_saved_test_image_gets_the_class_eval_scored_for_it(setup):
    wrong = setup["wrong"]
    for source in (setup["run"], setup["onnx"]):
        pred = predict_images(source, [setup["files"]["wrong"], setup["files"]["right"]], topk=3)
        (top_wrong, p_wrong), (top_right, _) = pred.top[0][0], pred.top[1][0]
        assert top_wrong == wrong["pred"] != wrong["true"]
        assert p_wrong == pytest.approx(wrong["prob"], abs=1e-5)
        assert top_right == setup["right_class"]
        assert len(pred.top[0]) == 3 and pred.top[0][0][1] >= pred.top[0][1][1] >= pred.top[0][2][1]
        assert pred.notes == []


def test_conversions_are_the_documented_ones(setup, tmp_path):
    grey = np.asarray(Image.open(setup["files"]["right"]))
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([grey] * 3, -1)).save(rgb)      # R = G = B: luma gives back the grey exactly
    wide = tmp_path / "wide.png"
    Image.fromarray(np.pad(grey, ((0, 0), (4, 4)))).save(wide)  # 40x32: shorter side 32, centre crop = original
    with pytest.warns(UserWarning) as caught:
        pred = predict_images(setup["run"], [setup["files"]["right"], rgb, wide], topk=10)
    probs = [dict(top) for top in pred.top]
    for other in probs[1:]:
        assert all(abs(other[c] - probs[0][c]) < 1e-6 for c in probs[0])
    notes = " | ".join(str(w.message) for w in caught)
    assert "1 colour image converted to grey" in notes and "rgb.png" in notes
    assert "1 image not 32x32 resized to 32x32 (shorter side scaled, centre-cropped" in notes and "wide.png" in notes


def test_topk_is_capped_at_the_class_count(setup):
    with pytest.warns(UserWarning, match="--topk 12 capped at the model's 10 classes"):
        pred = predict_images(setup["run"], [setup["files"]["right"]], topk=12)
    assert len(pred.top[0]) == 10 and sum(p for _, p in pred.top[0]) == pytest.approx(1.0, abs=1e-6)


def test_a_folder_becomes_a_csv(setup, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(setup["test"].images[i, 0].numpy()).save(folder / ("sub" if i == 2 else ".") / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"junk")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(setup["run"].path), str(folder), "--topk", "2", "--out", str(out)]) == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["file", "class_1", "prob_1", "class_2", "prob_2"]
    assert [Path(r[0]).name for r in rows[1:]] == ["0.png", "1.png", "2.png"]
    single = predict_images(setup["run"], [Path(r[0]) for r in rows[1:]], topk=2)
    assert [r[1] for r in rows[1:]] == [top[0][0] for top in single.top]
    assert "wrote 3 predictions" in capsys.readouterr().out


def test_the_onnx_path_imports_no_torch(setup):
    code = ("import sys; from cnnlab.cli import main; "
            f"rc = main(['predict', {str(setup['onnx'])!r}, {str(setup['files']['wrong'])!r}, '--tta', 'flip']); "
            "print('torch' in sys.modules, rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False 0"
    assert "wrong.png" in proc.stdout


def test_bad_inputs_are_one_line_errors(setup, tmp_path):
    junk = tmp_path / "broken.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    for source in (setup["run"].path, setup["onnx"]):
        proc = cnnlab("predict", source, setup["files"]["right"], junk)
        assert proc.returncode == 2 and "broken.png: undecodable image" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not a model")
    proc = cnnlab("predict", bad_onnx, setup["files"]["right"])
    assert proc.returncode == 2 and "bad.onnx: not a loadable ONNX model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(DataError, match="no such image file or folder"):
        predict_images(setup["run"], [tmp_path / "missing.png"])


def test_cli_conversion_notes_through_a_subprocess(setup, tmp_path):
    rgb_big = tmp_path / "photo.jpg"
    grey = np.asarray(Image.open(setup["files"]["right"]))
    Image.fromarray(np.stack([grey] * 3, -1)).resize((96, 80)).save(rgb_big)
    proc = cnnlab("predict", setup["run"].path, rgb_big, "--topk", "1", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stderr.strip().splitlines()
    assert len(notes) == 2 and all(n.startswith("cnnlab predict: note: ") for n in notes)
    assert '"file"' in proc.stdout and '"prob"' in proc.stdout
