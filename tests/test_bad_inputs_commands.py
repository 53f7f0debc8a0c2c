"""The bad-input corpus, part 4: the commands that work on a finished run — eval, predict, export, features,
probe, transfer-study, train --init/--freeze, viz, report, explain, experiment, sweep and runs.

A finished run (trained by `cnnlab train`, so with its report.html and the runs root's index.sqlite beside
it), its ONNX export and one image are built once per module; every case copies them into its own folder,
damages what it needs, snapshots the folder and runs the real CLI there (see test_bad_inputs.run_case for
the contract: exit 2, exactly one line naming the file or option and the problem, no traceback, nothing
written or half-written, nothing executed). Cases marked "(fixed)" in a comment were defects found by this
corpus: a traceback, a half-written or unwanted file, a second line, or an allocation of a claimed size."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from test_bad_inputs import Case, Evil, cnnlab, marker_of, params, run_case

NET = "conv3-4 > relu > fc10"


@pytest.fixture(scope="module")
def finished_root(tmp_path_factory):
    """A runs root holding run/ (LeNet-5 on 80 digits, one epoch, report.html), index.sqlite, model.onnx with
    its sidecar model.onnx.json, and digit.png (a 12x12 grey image)."""
    root = tmp_path_factory.mktemp("finished") / "root"
    root.mkdir()
    proc = cnnlab("train", "--out", root / "run", "--epochs", "1", "--threads", "1", "--quiet", "--limit-per-class",
                  "8", "--checkpoint-every", "3", cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = cnnlab("export", root / "run", "--format", "onnx", "--out", root / "model.onnx", "--check-images", "4",
                  cwd=root)
    assert proc.returncode == 0, proc.stderr
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "digit.png")
    names = {p.name for p in root.iterdir()}
    assert {"index.sqlite", "model.onnx", "model.onnx.json"} <= names and (root / "run" / "report.html").is_file()
    return root


def run_copied_case(case: Case, tmp_path: Path, base: Path) -> str:
    """run_case on a copy of `base`: copy, damage, snapshot, run, and check the refusal and the snapshot."""
    return run_case(case, tmp_path, base)


# --- writers of bad inputs -------------------------------------------------------------------------------------

def put(name: str, content: bytes | str):
    def make(d: Path) -> None:
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return make


def cut(name: str, keep: float = 0.5):
    def make(d: Path) -> None:
        raw = (d / name).read_bytes()
        (d / name).write_bytes(raw[:int(len(raw) * keep)])
    return make


def other_model_weights(name: str):
    def make(d: Path) -> None:
        from cnnlab.models import build_model

        save_file(build_model(NET, in_channels=1, input_size=(32, 32)).state_dict(), str(d / name))
    return make


def pickle_payload(name: str, via_torch: bool = True):
    def make(d: Path) -> None:
        if via_torch:
            torch.save({"features.0.weight": Evil(marker_of(d))}, d / name)
        else:
            (d / name).write_bytes(pickle.dumps(Evil(marker_of(d))))
    return make


def onnx_sidecar(change=None):
    """model.onnx without its embedded metadata, so that the sidecar model.onnx.json is what predict reads;
    `change(meta)` edits the sidecar (as if it came from another export)."""
    def make(d: Path) -> None:
        import onnx

        model = onnx.load(str(d / "model.onnx"))
        del model.metadata_props[:]
        onnx.save(model, str(d / "model.onnx"))
        if change is None:
            (d / "model.onnx.json").unlink()
            return
        meta = json.loads((d / "model.onnx.json").read_text())
        change(meta)
        (d / "model.onnx.json").write_text(json.dumps(meta))
    return make


def pre(**values):
    return lambda meta: meta["preprocess"].update(values)


def onnx_reading_outside(d: Path) -> None:
    """An ONNX graph whose weight is "external data" at ../../etc/hostname: a file outside the model's folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in (("location", "../../../etc/hostname"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", io[:1], io[1:], [weight])
    (d / "sub").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "sub" / "x.onnx"))


def features_file(change=None):
    """A well-formed features .npz (the format `cnnlab features` writes); `change(arrays)` damages it."""
    def make(d: Path) -> None:
        rng = np.random.default_rng(0)
        arrays = {"meta": np.array(json.dumps({"format": "cnnlab-features", "schema_version": 1, "layer": "fc",
                                               "source": "x", "data": "digits", "pool": "avg"})),
                  "classes": np.array(["a", "b"])}
        for split, n in (("train", 20), ("val", 10), ("test", 10)):
            arrays[f"x_{split}"] = rng.normal(size=(n, 4)).astype(np.float32)
            arrays[f"y_{split}"] = np.arange(n) % 2
        if change:
            change(arrays)
        np.savez(d / "f.npz", **arrays)
    return make


def object_features(d: Path) -> None:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Evil(marker_of(d)), 1
    np.savez(d / "f.npz", x_train=arr, y_train=np.arange(2))


def nan_features(arrays) -> None:
    arrays["x_train"][0, 0] = np.nan


def foreign_database(d: Path) -> None:
    import sqlite3

    (d / "index.sqlite").unlink()
    with sqlite3.connect(d / "index.sqlite") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()


def damaged_index(d: Path) -> None:
    raw = bytearray((d / "index.sqlite").read_bytes())
    raw[:16] = b"not a database!!"
    (d / "index.sqlite").write_bytes(bytes(raw))


def sweep_file(text: str, train: str = "train: {model: 'conv3-4 > relu > fc10', epochs: 1, limit_per_class: 5}\n"):
    return put("s.yaml", text + train)


def broken_experiment(d: Path) -> None:
    (d / "e").mkdir()
    (d / "e" / "experiment.json").write_text("{broken")


RUN = "{d}/run"
IMG = "{d}/digit.png"
NONE = (lambda d: None)

EVAL_CASES = [
    Case("eval-not-a-run-dir", ("eval", "{d}"), ("{d}: not a run directory (no config.json)",)),
    Case("eval-weights-truncated", ("eval", RUN), ("run/model.safetensors", "not a readable safetensors file"),
         cut("run/model.safetensors")),
    Case("eval-weights-missing", ("eval", RUN), ("no final weights",),
         lambda d: (d / "run" / "model.safetensors").unlink()),
    Case("eval-weights-of-another-model", ("eval", RUN), ("run/model.safetensors", "weights of another model"),
         other_model_weights("run/model.safetensors")),
    Case("eval-unknown-weights-kind", ("eval", RUN, "--weights", "bestest"), ("--weights 'bestest'",)),
    Case("eval-snapshot-not-kept", ("eval", RUN, "--weights", "snapshot:3"), ("no snapshot:3 weights",)),
    Case("eval-unknown-tta", ("eval", RUN, "--tta", "flipflop"), ("--tta 'flipflop'", "unknown test-time")),
    Case("eval-unknown-split", ("eval", RUN, "--split", "holdout"), ("--split", "invalid choice: 'holdout'")),
    Case("eval-ensemble-member-not-a-run", ("eval", RUN, "--ensemble", "{d}"), ("not a run directory",)),
    Case("eval-config-json-broken", ("eval", RUN), ("run/config.json", "not a readable JSON file"),
         put("run/config.json", "{broken")),
    Case("eval-out-cannot-be-written", ("eval", RUN, "--out", "/proc/cnnlab-eval"),  # (fixed: root, after work)
         ("--out /proc/cnnlab-eval: cannot be written",)),
]

PREDICT_CASES = [
    Case("predict-image-zero-bytes", ("predict", RUN, "{d}/z.png"), ("z.png: undecodable image",), put("z.png", b"")),
    Case("predict-image-truncated", ("predict", RUN, IMG), ("digit.png: undecodable image", "truncated"),
         cut("digit.png")),
    Case("predict-image-unknown-format", ("predict", RUN, "{d}/u.png"), ("u.png", "cannot identify image file"),
         put("u.png", "plain text, not an image")),
    Case("predict-directory-named-like-an-image", ("predict", RUN, "{d}/d.png"), ("d.png: no image files",),
         lambda d: (d / "d.png").mkdir()),
    Case("predict-onnx-truncated", ("predict", "{d}/model.onnx", IMG), ("model.onnx: not a loadable ONNX model",),
         cut("model.onnx")),
    Case("predict-onnx-not-protobuf", ("predict", "{d}/j.onnx", IMG), ("j.onnx: not a loadable ONNX model",),
         put("j.onnx", b"\x08\x07garbage" * 10)),
    Case("predict-onnx-without-metadata", ("predict", "{d}/model.onnx", IMG), ("no cnnlab metadata",),
         onnx_sidecar()),
    # (fixed: IndexError on the class list)
    Case("predict-onnx-metadata-names-other-classes", ("predict", "{d}/model.onnx", IMG),
         ("model.onnx", "names 2 classes but the model has 10 outputs"),
         onnx_sidecar(lambda m: m.update(classes=["cat", "dog"]))),
    # (fixed: onnxruntime's InvalidArgument traceback)
    Case("predict-onnx-metadata-of-another-size", ("predict", "{d}/model.onnx", IMG),
         ("says 1x28x28 images but the model's input is 1x32x32",), onnx_sidecar(pre(image_size=[28, 28]))),
    Case("predict-onnx-metadata-of-another-colour", ("predict", "{d}/model.onnx", IMG), ("says 3x32x32 images",),
         onnx_sidecar(pre(channels=3, mean=[0, 0, 0], std=[1, 1, 1]))),
    # (fixed: KeyError)
    Case("predict-onnx-metadata-missing-a-key", ("predict", "{d}/model.onnx", IMG), ("'preprocess' lacks",),
         onnx_sidecar(lambda m: m["preprocess"].pop("channels"))),
    # (fixed: std 0 gave infinite inputs and exit 0)
    Case("predict-onnx-metadata-std-zero", ("predict", "{d}/model.onnx", IMG), ("std above 0",),
         onnx_sidecar(pre(std=[0.0]))),
    # (fixed: the process was killed for memory)
    Case("predict-onnx-metadata-claims-a-huge-image", ("predict", "{d}/model.onnx", IMG),
         ("says 1x100000x100000 images",), onnx_sidecar(pre(image_size=[100000, 100000]))),
    Case("predict-onnx-external-data-outside-its-folder", ("predict", "{d}/sub/x.onnx", IMG),
         ("x.onnx: not a loadable ONNX model", "escapes model directory"), onnx_reading_outside),
    Case("predict-weights-kind-for-an-onnx-file", ("predict", "{d}/model.onnx", IMG, "--weights", "best"),
         ("--weights chooses a run directory's weights",)),
    Case("predict-run-weights-of-another-model", ("predict", RUN, IMG), ("weights of another model",),
         other_model_weights("run/model.safetensors")),
    Case("predict-topk-0", ("predict", RUN, IMG, "--topk", "0"), ("--topk must be a positive integer",)),
    Case("predict-out-is-a-directory", ("predict", RUN, IMG, "--out", RUN), ("--out {d}/run: is a directory",)),
    Case("predict-out-cannot-be-written", ("predict", RUN, IMG, "--out", "/proc/p.csv"),  # (fixed: a note first)
         ("--out /proc: cannot be written",)),
]

EXPORT_CASES = [
    Case("export-unknown-format", ("export", RUN, "--format", "tflite", "--out", "{d}/m.tflite"),
         ("--format", "invalid choice: 'tflite'")),
    # (fixed: written, and then misread by predict, which goes by the suffix)
    Case("export-onnx-with-a-pt-suffix", ("export", RUN, "--format", "onnx", "--out", "{d}/m.pt"),
         ("--out {d}/m.pt: an export to onnx must end in .onnx",)),
    Case("export-torchscript-with-an-onnx-suffix", ("export", RUN, "--format", "torchscript", "--out", "{d}/m.onnx"),
         ("an export to torchscript must end in .pt or .pth",)),
    Case("export-no-suffix", ("export", RUN, "--format", "safetensors", "--out", "{d}/m"), (".safetensors",)),
    Case("export-out-cannot-be-written", ("export", RUN, "--format", "onnx", "--out", "/proc/m.onnx"),
         ("--out /proc: cannot be written",)),  # (fixed: as root, found only after the export was made)
    Case("export-out-inside-a-file", ("export", RUN, "--format", "onnx", "--out", "{d}/digit.png/m.onnx"),
         ("digit.png: exists and is not a directory",)),
    Case("export-damaged-run", ("export", RUN, "--format", "onnx", "--out", "{d}/m.onnx"),
         ("run/model.safetensors", "not a readable safetensors file"), put("run/model.safetensors", b"xx")),
    Case("export-check-images-0", ("export", RUN, "--format", "onnx", "--out", "{d}/m.onnx", "--check-images", "0"),
         ("--check-images must be a positive integer",)),
]

TRAIN_INIT = ("train", "lenet5", "--out", "{d}/t", "--epochs", "1", "--quiet", "--threads", "1", "--limit-per-class",
              "5")
TRANSFER_CASES = [
    Case("init-pickle-that-runs-code", TRAIN_INIT + ("--init", "{d}/evil.pt"),
         ("evil.pt: refused: loading it would run pickled code",), pickle_payload("evil.pt")),
    Case("init-plain-pickle", TRAIN_INIT + ("--init", "{d}/evil.pth"), ("evil.pth: refused",),
         pickle_payload("evil.pth", via_torch=False)),
    Case("init-from-another-model", TRAIN_INIT + ("--init", "{d}/o.safetensors"), ("none of its 4 tensors fits",),
         other_model_weights("o.safetensors")),
    Case("init-truncated", TRAIN_INIT + ("--init", "{d}/run/model.safetensors"),
         ("model.safetensors: not a readable safetensors file",), cut("run/model.safetensors")),
    Case("init-sha256-mismatch", TRAIN_INIT + ("--init", "{d}/run/model.safetensors", "--init-sha256",
                                               "deadbeefdeadbeef"), ("SHA-256 does not start with deadbeefdeadbeef",)),
    Case("init-sha256-not-hex", TRAIN_INIT + ("--init", RUN, "--init-sha256", "xyz"), ("--init-sha256 'xyz'",)),
    # (fixed: "loaded 10 of 10 tensors" was printed before the error)
    Case("freeze-unknown-stage", TRAIN_INIT + ("--init", RUN, "--freeze", "stage9"),
         ("--freeze stage9", "no stage 'stage9'", "stem, stage1, stage2, head")),
    Case("lr-mult-unknown-stage", TRAIN_INIT + ("--init", RUN, "--lr-mult", "stage9=0.1"), ("no stage 'stage9'",)),
    Case("lr-mult-not-a-number", TRAIN_INIT + ("--init", RUN, "--lr-mult", "head=fast"), ("'fast' is not a number",)),
    Case("lr-mult-nan", TRAIN_INIT + ("--init", RUN, "--lr-mult", "head=nan"), ("finite and >= 0",)),
    Case("lr-mult-without-factor", TRAIN_INIT + ("--init", RUN, "--lr-mult", "head"), ("expected STAGE=FACTOR",)),
    Case("features-unknown-layer", ("features", RUN, "--layer", "nolayer", "--out", "{d}/f.npz"),
         ("--layer nolayer: no such layer",)),
    Case("features-init-pickle", ("features", "lenet5", "--init", "{d}/evil.pt", "--data", "digits", "--out",
                                  "{d}/f.npz"), ("evil.pt: refused",), pickle_payload("evil.pt")),
    Case("features-out-not-npz", ("features", RUN, "--out", "{d}/f.txt"), ("expected a .npz file name",)),
    # (fixed: 0 meant "no limit" and the features were written)
    Case("features-limit-per-class-0", ("features", RUN, "--out", "{d}/f.npz", "--limit-per-class", "0"),
         ("--limit-per-class must be a positive integer",)),
    Case("probe-object-array-needs-pickle", ("probe", "{d}/f.npz"), ("f.npz", "allow_pickle=False"),
         object_features),
    Case("probe-not-a-features-file", ("probe", "{d}/f.npz"), ("not a cnnlab features file",),
         lambda d: np.savez(d / "f.npz", x=np.zeros((4, 3)), y=np.arange(4))),
    Case("probe-nan-features", ("probe", "{d}/f.npz"), ("x_train holds NaN",), features_file(nan_features)),  # fixed
    Case("probe-label-out-of-range", ("probe", "{d}/f.npz"), ("label 6 out of range for 2 classes",),
         features_file(lambda a: a.update(y_test=np.arange(10) % 2 + 5))),
    Case("probe-unknown-classifier", ("probe", "{d}/f.npz", "--classifier", "knn"), ("--classifier knn",),
         features_file()),
    Case("probe-C-infinite", ("probe", "{d}/f.npz", "--C=inf"), ("--C: values must be positive finite",),
         features_file()),  # (fixed: inf turned the regularisation off silently)
    Case("probe-cv-1", ("probe", "{d}/f.npz", "--cv", "1"), ("--cv must be at least 2",), features_file()),
    Case("transfer-study-seeds-0", ("transfer-study", "--seeds", "0", "--out", "{d}/ts"), ("--seeds",)),
    Case("transfer-study-unknown-class", ("transfer-study", "--classes-a", "0,1,zebra", "--out", "{d}/ts"),
         ("'zebra' is not a class of digits",)),
]

VIZ_CASES = [
    Case("viz-filters-unknown-layer", ("viz", "filters", RUN, "--layer", "nolayer"), ("--layer 'nolayer'",)),
    Case("viz-filters-of-a-linear-layer", ("viz", "filters", RUN, "--layer", "classifier.1"),
         ("is a Linear, not a convolution",)),
    Case("viz-top-patches-units-0", ("viz", "top-patches", RUN, "--layer", "stage1", "--units", "0"),
         ("--units", "positive integer")),
    # (fixed: drawn, and the 23-digit number echoed back in full)
    Case("viz-top-patches-units-absurd", ("viz", "top-patches", RUN, "--layer", "stage1", "--units", "9" * 23),
         ("--units", "up to 1,000,000, got 1e+23")),
    Case("viz-occlusion-patch-larger-than-the-image", ("viz", "occlusion", RUN, "test:0", "--patch", "64"),
         ("--patch 64: larger than the 32x32 image",)),
    Case("viz-occlusion-stride-0", ("viz", "occlusion", RUN, "test:0", "--stride", "0"), ("--stride",)),
    Case("viz-occlusion-grey-nan", ("viz", "occlusion", RUN, "test:0", "--grey", "nan"), ("--grey", "[0, 1]")),
    Case("viz-gradcam-class-out-of-range", ("viz", "gradcam", RUN, "test:0", "--class", "10"),
         ("--class '10': not a class of this run",)),
    Case("viz-activations-zero-byte-image", ("viz", "activations", RUN, "{d}/z.png"), ("z.png: undecodable",),
         put("z.png", b"")),
    Case("viz-activations-index-out-of-range", ("viz", "activations", RUN, "test:99999"),
         ("test split holds 20 images",)),
    Case("viz-curves-not-a-run", ("viz", "curves", RUN, "{d}"), ("not a run directory",)),
    Case("viz-curves-damaged-metrics", ("viz", "curves", RUN), ("no epoch finished yet",),
         put("run/metrics.jsonl", "{broken\n")),
    # (fixed: these three wrote report.html with the problem as a note on the page, exit 0)
    Case("report-zero-byte-image", ("report", RUN, "--image", "{d}/z.png"), ("z.png: undecodable image",),
         put("z.png", b"")),
    Case("report-image-index-out-of-range", ("report", RUN, "--image", "test:100000"), ("holds 20 images",)),
    Case("report-damaged-weights", ("report", RUN), ("run/model.safetensors", "not a readable safetensors"),
         put("run/model.safetensors", b"xx")),
    Case("explain-run-page-zero-byte-image", ("explain", RUN, "{d}/z.png", "--html", "{d}/p.html"),
         ("z.png: undecodable image",), put("z.png", b"")),
    Case("explain-run-page-missing-weights-kind", ("explain", RUN, IMG, "--html", "{d}/p.html", "--weights", "ema"),
         ("no ema weights",)),
    Case("explain-run-page-damaged-weights", ("explain", RUN, IMG, "--html", "{d}/p.html"),
         ("run/model.safetensors", "not a readable safetensors"), put("run/model.safetensors", b"xx")),
    Case("explain-run-page-config-not-an-object", ("explain", RUN, IMG, "--html", "{d}/p.html"),
         ("run/config.json: expected a JSON object",), put("run/config.json", "[]")),
    Case("explain-model-page-of-a-damaged-run", ("explain", RUN, "--html", "{d}/p.html"),
         ("run/config.json", "not a readable JSON file"), put("run/config.json", "{")),
    Case("explain-model-page-bad-token", ("explain", "conv3-4 > florp", "--input", "1x8x8", "--html", "{d}/p.html"),
         ("bad token 'florp'",)),
]

EXP = ("experiment", "run")
QUICK = ("--root", "{d}", "--quick")
SW = ("sweep", "--config", "{d}/s.yaml", "--root", "{d}")
GOOD_SPACE = "space: {lr: [0.1, 0.2]}\n"
EXPERIMENT_CASES = [
    Case("experiment-unknown", EXP + ("nosuch",) + QUICK, ("unknown experiment 'nosuch'",)),
    Case("experiment-set-without-value", EXP + ("lenet-table", "--set", "epochs") + QUICK,
         ("--set expects KEY=VALUE",)),
    Case("experiment-set-unknown-key", EXP + ("lenet-table", "--set", "colour=red") + QUICK,
         ("colour is not a training option",)),
    Case("experiment-set-wrong-type", EXP + ("lenet-table", "--set", "epochs=ten") + QUICK, ("epochs expects int",)),
    Case("experiment-set-python-tag", EXP + ("lenet-table", "--set", "lr=!!python/object/apply:os.system "
                                             "['touch EXECUTED']") + QUICK, ("lr expects float",)),
    Case("experiment-seeds-0", EXP + ("lenet-table", "--seeds", "0") + QUICK, ("--seeds must be a positive",)),
    # (fixed: accepted; with many cells it starts one process per training at once)
    Case("experiment-jobs-absurd", EXP + ("lenet-table", "--jobs", "100000") + QUICK,
         ("--jobs 100,000", "trainings per CPU core")),
    Case("experiment-table-damaged-plan", ("experiment", "table", "{d}/e"),
         ("e/experiment.json", "not a readable JSON file"), broken_experiment),
    Case("sweep-space-missing", SW, ("s.yaml", "space is empty"), sweep_file("study: s\nsampler: random\n")),
    Case("sweep-trials-missing", SW, ("s.yaml", "give trials: N"), sweep_file("study: s\n" + GOOD_SPACE)),
    Case("sweep-low-above-high", SW, ("space.lr: low (0.5) must be below high (0.1)",),
         sweep_file("study: s\ntrials: 2\nspace: {lr: {low: 0.5, high: 0.1}}\n")),
    Case("sweep-range-nan", SW, ("space.lr", "finite numbers"),  # (fixed: "low (nan) must be below high")
         sweep_file("study: s\ntrials: 2\nspace: {lr: {low: .nan, high: 1}}\n")),
    # (fixed: the grid's lists filled memory and the process was killed, leaving lock and WAL files)
    Case("sweep-grid-of-ten-trillion-points", SW, ("the grid has 1e+13 points", "at most 100,000"),
         sweep_file("study: s\nsampler: grid\nspace: {lr: {low: 0.001, high: 1, step: 1.0e-13}}\n")),
    Case("sweep-unknown-sampler", SW, ("unknown sampler 'annealing'",),
         sweep_file("study: s\ntrials: 2\nsampler: annealing\n" + GOOD_SPACE)),
    Case("sweep-unknown-pruner", SW, ("unknown pruner 'hyperband'",),
         sweep_file("study: s\ntrials: 2\npruner: hyperband\n" + GOOD_SPACE)),
    Case("sweep-python-tag", SW, ("s.yaml", "could not determine a constructor"),
         lambda d: sweep_file(f"study: !!python/object/apply:os.system ['touch {marker_of(d)}']\ntrials: 2\n"
                              + GOOD_SPACE)(d)),
    Case("sweep-unknown-train-key", SW, ("s.yaml: unknown key 'colour'",),  # (fixed: blamed on space.lr)
         sweep_file("study: s\ntrials: 2\n" + GOOD_SPACE, train="train: {model: lenet5, colour: red}\n")),
    Case("sweep-storage-unreachable", SW + ("--storage", "postgresql://nobody@127.0.0.1:1/db"),
         ("--storage", "cannot open the study storage", "Connection refused"),
         sweep_file("study: s\ntrials: 2\n" + GOOD_SPACE)),
    Case("sweep-storage-unknown-scheme", SW + ("--storage", "redis://x"), ("--storage 'redis://x'",),
         sweep_file("study: s\ntrials: 2\n" + GOOD_SPACE)),
]

RUNS_CASES = [
    Case("runs-index-damaged", ("runs", "--root", "{d}"), ("index.sqlite: not a usable runs index",), damaged_index),
    Case("runs-index-truncated", ("runs", "--root", "{d}"), ("index.sqlite", "malformed"), cut("index.sqlite", 0.1)),
    # (fixed: both were given cnnlab's tables and listed as an empty leaderboard)
    Case("runs-index-zero-bytes", ("runs", "--root", "{d}"), ("not a runs index (an empty file)",),
         put("index.sqlite", b"")),
    Case("runs-index-of-another-program", ("runs", "--root", "{d}"), ("a database without cnnlab's tables",),
         foreign_database),
    Case("runs-unknown-sort-key", ("runs", "--root", "{d}", "--sort", "colour"), ("--sort 'colour': unknown",)),
    Case("runs-where-without-operator", ("runs", "--root", "{d}", "--where", "lr"), ("expected KEY OP VALUE",)),
    # (fixed: each of these listed runs as if the filter made sense)
    Case("runs-where-doubled-operator", ("runs", "--root", "{d}", "--where", "lr<<0.1"),
         ("starts with an operator",)),
    Case("runs-where-number-expected", ("runs", "--root", "{d}", "--where", "val_accuracy>high"),
         ("val_accuracy is a number",)),
    Case("runs-where-nan", ("runs", "--root", "{d}", "--where", "lr>nan"), ("finite number",)),
    Case("runs-show-empty-id", ("runs", "show", "", "--root", "{d}"), ("run '': give a run id",)),
]


@pytest.mark.parametrize("case", params(EVAL_CASES + PREDICT_CASES + EXPORT_CASES + TRANSFER_CASES + VIZ_CASES
                                        + EXPERIMENT_CASES + RUNS_CASES))
def test_bad_input_to_a_command_on_a_finished_run_is_refused_in_one_line(case, tmp_path, finished_root):
    run_copied_case(case, tmp_path, finished_root)


def test_the_fixture_run_is_usable_so_the_cases_test_their_damage(tmp_path, finished_root):
    # The undamaged copies of what the cases damage work: each refusal above is caused by its damage.
    d = tmp_path / "ok"
    shutil.copytree(finished_root, d, symlinks=True)
    for argv in (["predict", d / "run", d / "digit.png"], ["predict", d / "model.onnx", d / "digit.png"],
                 ["runs", "--root", d, "--where", "val_accuracy>0.01"], ["probe", d / "f.npz"]):
        if argv[0] == "probe":
            features_file()(d)
        proc = cnnlab(*argv, cwd=d)
        assert proc.returncode == 0, (argv, proc.stderr)
    onnx_sidecar(lambda meta: None)(d)  # the sidecar alone, unchanged, is enough
    assert cnnlab("predict", d / "model.onnx", d / "digit.png", cwd=d).returncode == 0


def test_a_storage_password_is_never_echoed(tmp_path, finished_root):
    case = Case("sweep-storage-with-password", SW + ("--storage", "postgresql://me:s3cret@127.0.0.1:1/db"),
                ("cannot open the study storage",), sweep_file("study: s\ntrials: 2\n" + GOOD_SPACE))
    assert "s3cret" not in run_copied_case(case, tmp_path, finished_root)
