"""`cnnlab features` and `cnnlab probe`: activations equal a plain forward through the same layers (with the
run's normalisation applied by hand), pooling, the cache, the file format's checks, and the probe against
scikit-learn fitted by hand with the chosen C."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnlab.errors import ConfigError, DataError
from cnnlab.runs import Run
from cnnlab.train import train
from cnnlab.transfer import features as feat
from cnnlab.transfer.features import extract_features, load_features
from cnnlab.transfer.probe import fit_probe


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "lenet5"
    train(epochs=2, limit_per_class=20, threads=1, quiet=True, out=str(out))
    return out


def _inputs(run_dir, split):
    """The split's images normalised by hand with the mean/std the run saved in config.json."""
    run = Run.open(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    images = getattr(run.dataset(), split).images.float() / 255.0
    mean, std = torch.tensor(info["mean"]).view(1, -1, 1, 1), torch.tensor(info["std"]).view(1, -1, 1, 1)
    return (images - mean) / std, run.model()


def test_features_equal_a_plain_forward_through_the_same_layers(run_dir, tmp_path):
    x, model = _inputs(run_dir, "test")
    with torch.no_grad():
        pre_logits = model.classifier[:-1](model.features(x))       # act(F6(flatten(C5)))
        c3_maps = model.features[:6](x)                             # C1, act, S2, C3, act, S4
        c3_act = model.features[:5](x)                              # before S4
    fs = extract_features(str(run_dir), "pre-logits", out=tmp_path / "pl.npz")
    assert fs.dim == 84 and np.allclose(fs.x["test"], pre_logits.numpy(), atol=1e-5)
    flat = extract_features(str(run_dir), "stage1", pool="flatten")
    assert flat.dim == 16 * 5 * 5 and np.allclose(flat.x["test"], c3_maps.flatten(1).numpy(), atol=1e-5)
    avg = extract_features(str(run_dir), "stage1", pool="avg")
    assert np.allclose(avg.x["test"], c3_maps.mean(dim=(2, 3)).numpy(), atol=1e-5)
    mx = extract_features(str(run_dir), "features.4", pool="max")
    assert np.allclose(mx.x["test"], c3_act.amax(dim=(2, 3)).numpy(), atol=1e-5)
    ds = Run.open(run_dir).dataset()
    assert all(np.array_equal(fs.y[s], getattr(ds, s).labels.numpy()) for s in ("train", "val", "test"))
    assert fs.classes == [str(i) for i in range(10)] and fs.meta["shape"] == [84]
    assert flat.meta["shape"] == [16, 5, 5]


def test_features_are_cached_and_recomputed_when_the_layer_changes(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "f.npz"
    first = extract_features(str(run_dir), "stage2", out=out)
    assert not first.cached and out.is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(feat, "layer_outputs", must_not_run)
    again = extract_features(str(run_dir), "stage2", out=out)
    assert again.cached and all(np.array_equal(again.x[s], first.x[s]) for s in first.x)
    with pytest.raises(AssertionError, match="recomputed"):
        extract_features(str(run_dir), "stage1", out=out)


def test_a_model_name_with_init_from_the_run_gives_the_runs_features(run_dir):
    from_run = extract_features(str(run_dir), "stage2")
    from_name = extract_features("lenet5", "stage2", "digits", init=str(run_dir), limit_per_class=20)
    assert all(np.allclose(from_run.x[s], from_name.x[s], atol=1e-6) for s in from_run.x)


def test_features_file_checks(tmp_path, run_dir):
    with pytest.raises(DataError, match="no such features file"):
        load_features(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable features .npz"):
        load_features(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 3)), y=np.zeros(2))
    with pytest.raises(DataError, match="not a cnnlab features file"):
        load_features(tmp_path / "other.npz")
    fs = extract_features(str(run_dir), "stage2", out=tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = dict(z)
    arrays["y_test"] = arrays["y_test"][:-1]
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(DataError, match="x_test/y_test missing or of mismatched lengths"):
        load_features(tmp_path / "cut.npz")
    with pytest.raises(ConfigError, match="--layer nosuch: no such layer"):
        extract_features(str(run_dir), "nosuch")
    with pytest.raises(ConfigError, match="expected a .npz"):
        extract_features(str(run_dir), out=tmp_path / "f.txt")
    assert fs.sizes() == {k: len(v) for k, v in fs.y.items()}


def test_probe_matches_sklearn_fitted_by_hand_with_the_chosen_c(run_dir):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    fs = extract_features(str(run_dir), "stage2")
    for name, make in (("logreg", lambda c: LogisticRegression(C=c, max_iter=5000)),
                       ("svm", lambda c: LinearSVC(C=c, max_iter=20000, random_state=0))):
        result = fit_probe(fs, name, Cs=(0.01, 1.0))
        assert result.C in (0.01, 1.0) and result.folds == 5 and result.n_train == len(fs.y["train"])
        scaler = StandardScaler().fit(fs.x["train"])
        clf = make(result.C).fit(scaler.transform(fs.x["train"]), fs.y["train"])
        acc = float((clf.predict(scaler.transform(fs.x["test"])) == fs.y["test"]).mean())
        assert result.test_accuracy == pytest.approx(acc), name
        assert result.test_accuracy > 0.5


def test_probe_on_separable_blobs_and_input_checks():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 8))
    x = {s: np.concatenate([c + rng.normal(0, 0.5, (n, 8)) for c in centres]).astype(np.float32)
         for s, n in (("train", 12), ("val", 4), ("test", 20))}
    y = {s: np.repeat(np.arange(3), n) for s, n in (("train", 12), ("val", 4), ("test", 20))}
    fs = feat.FeatureSet(x, y, ["a", "b", "c"], {"layer": "blobs"})
    assert fit_probe(fs).test_accuracy == 1.0
    with pytest.raises(ConfigError, match="--classifier"):
        fit_probe(fs, "forest")
    one = feat.FeatureSet({**x, "train": x["train"][:13]}, {**y, "train": y["train"][:13]}, ["a", "b", "c"], {})
    with pytest.raises(ConfigError, match="a single training example"):
        fit_probe(one)


def test_cli_features_then_probe(run_dir, tmp_path, capsys):
    from cnnlab.cli import main

    out = tmp_path / "f.npz"
    assert main(["features", str(run_dir), "--layer", "stage2", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "stage2" in line and "120x1x1 per image → 120 (avg)" in line and "computed" in line
    assert main(["features", str(run_dir), "--layer", "stage2", "--out", str(out)]) == 0
    assert "cached" in capsys.readouterr().out
    assert main(["probe", str(out), "--classifier", "logreg,svm", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["classifier"] for r in rows] == ["logreg", "svm"] and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert main(["probe", str(out)]) == 0
    assert "linear probes" in capsys.readouterr().out
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert main(["probe", str(bad := tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert main(["features", "lenet5", "--out", str(out)]) == 2
    assert "--data is required" in capsys.readouterr().err
