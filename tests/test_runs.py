"""A finished run as a first-class object: cnnlab.load_run gives the config, classes, preprocessing, models
with any kept weights and loaders; the shared `evaluate` reproduces the scores training wrote."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.nn import functional as F

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabWarning, ConfigError
from cnnlab.runs import Run, write_run_config
from cnnlab.train import TrainConfig, evaluate, train

QUICK = dict(epochs=2, threads=1, quiet=True)


def _score(run: Run, weights: str) -> dict:
    return evaluate(run.model(weights), run.loader("test"))


@pytest.mark.parametrize("extra, kinds", [
    ({}, {"final": "test_accuracy"}),
    ({"ema": True, "ema_decay": 0.9}, {"final": "test_accuracy", "ema": "ema_test_accuracy"}),
    ({"ema": True, "ema_decay": 0.9, "ema_eval": True}, {"final": "test_accuracy", "ema": "test_accuracy"}),
    ({"snapshots": 2}, {"final": "test_accuracy"}),
])
def test_loaded_run_reproduces_result_exactly(tmp_path, extra, kinds):
    out = tmp_path / "run"
    train(**QUICK, **extra, out=str(out))
    run = cnnlab.load_run(out)
    result = run.result
    assert result["schema_version"] == 1 and run.schema_version == 1
    for weights, key in kinds.items():
        scores = _score(run, weights)
        assert scores["count"] == result["test_count"]
        assert scores["top1"] == result[key], weights  # exactly: same weights, same data, same batches
    if extra.get("snapshots"):
        assert run.weight_kinds() == ["final", "snapshot:1", "snapshot:2"]
        probs = sum(torch.cat([run.model(f"snapshot:{k}")(x).softmax(1) for x, _ in run.loader("test")])
                    for k in (1, 2))
        labels = torch.cat([y for _, y in run.loader("test")])
        assert float((probs.argmax(1) == labels).double().mean()) == result["ensemble_test_accuracy"]


def test_run_object_exposes_config_classes_preprocessing_and_metrics(tmp_path):
    out = tmp_path / "run"
    train(**QUICK, out=str(out))
    run = Run.open(out)
    assert isinstance(run.config, TrainConfig) and run.config.epochs == 2 and run.config.model == "lenet5"
    assert run.classes == [str(i) for i in range(10)] and run.num_classes == 10
    pre = run.preprocess
    assert pre.image_size == (32, 32) and pre.channels == 1 and pre.pad == 0 and len(pre.mean) == 1
    assert [m["epoch"] for m in run.metrics] == [1, 2]
    x, y = next(iter(run.loader("val", batch_size=7)))
    assert x.shape == (7, 1, 32, 32) and y.dtype == torch.int64
    assert run.model(None).training is False  # freshly initialised, eval mode
    with pytest.raises(ConfigError, match="no ema weights.*--ema"):
        run.model("ema")
    with pytest.raises(ConfigError, match="no best weights"):
        run.model("best")
    with pytest.raises(ConfigError, match="--weights 'latest'"):
        run.model("latest")


def test_evaluate_reports_plain_cross_entropy_top1_top5_counts():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 7)
    batches = [(torch.randn(5, 6), torch.randint(0, 7, (5,))) for _ in range(3)]
    out = evaluate(model, batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(x)
    assert out["count"] == 15 and out["correct"] == int((logits.argmax(1) == y).sum())
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)  # no label smoothing
    assert out["top5"] == pytest.approx(float((logits.topk(5, 1).indices == y[:, None]).any(1).double().mean()))
    assert evaluate(torch.nn.Linear(6, 3), [(x, y % 3)])["top5"] is None  # fewer than 5 classes


def test_summary_of_a_cifar_stem_resnet_run_uses_the_runs_options(tmp_path, capsys):
    cfg = TrainConfig(model="resnet18", data="cifar10", model_opts={"stem": "cifar"}).validate()
    write_run_config(tmp_path, cfg, classes=[str(i) for i in range(10)], image_shape=(3, 32, 32),
                     model_options={"stem": "cifar"}, mean=[0.5] * 3, std=[0.25] * 3, params=0,
                     split_sizes={})
    assert main(["summary", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    first = doc["layers"][0]
    assert first["kernel"] == [3, 3] and first["stride"] == [1, 1]  # the CIFAR stem, not 7x7/2
    assert doc["input_size"] == [3, 32, 32] and doc["totals"]["output_shape"] == [1, 10]


def test_a_run_written_before_schema_versions_still_opens(tmp_path):
    """Version 0 (cnnlab 0.1.0 before this change): config.json = TrainConfig fields with image_size
    overwritten by [H, W], no schema_version, no preprocess or pad; result.json without a version."""
    model = cnnlab.build_model("lenet5", num_classes=3)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    fields = {k: v for k, v in TrainConfig().to_dict().items() if k != "pad"}
    (tmp_path / "config.json").write_text(json.dumps({
        **fields, "num_classes": 3, "in_channels": 1, "image_size": [32, 32], "model_options": {},
        "classes": ["a", "b", "c"], "mean": [0.2], "std": [0.3], "params": 61706, "split_sizes": {}}))
    (tmp_path / "result.json").write_text(json.dumps({"test_accuracy": 0.5}))
    run = Run.open(tmp_path)
    assert run.schema_version == 0 and run.classes == ["a", "b", "c"] and run.result["test_accuracy"] == 0.5
    assert run.preprocess.mean == (0.2,) and run.preprocess.image_size == (32, 32)
    loaded = run.model("final")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_newer_schema_and_corrupt_config_are_one_line_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ConfigError, match="schema_version 99"):
        Run.open(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not a readable JSON"):
        Run.open(tmp_path)


def test_googlenet_with_aux_heads_trains_and_its_loss_includes_them(tmp_path):
    from cnnlab.train.trainer import training_loss

    torch.manual_seed(0)
    model = cnnlab.build_model("googlenet", num_classes=4, in_channels=1, input_size=32, aux_logits=True).train()
    x, y = torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 3])
    out = model(x)
    loss, logits = training_loss(out, y, torch.nn.CrossEntropyLoss())
    expected = (F.cross_entropy(out.logits, y) + 0.3 * F.cross_entropy(out.aux_logits1, y)
                + 0.3 * F.cross_entropy(out.aux_logits2, y))
    assert torch.allclose(loss, expected) and logits is out.logits
    r = train(model="googlenet", model_opts={"aux_logits": True}, epochs=1, limit_per_class=6, batch_size=16,
              threads=1, quiet=True, out=str(tmp_path / "g"))
    assert r.epochs == 1 and 0.0 <= r.test_accuracy <= 1.0
    from cnnlab.train import lr_find

    found = lr_find(model="googlenet", model_opts={"aux_logits": True}, limit_per_class=6, batch_size=16,
                    threads=1, steps=12)
    assert len(found.lrs) >= 2


def test_library_writes_nothing_to_stdout_and_notes_are_warnings(tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(epochs=1, threads=1, quiet=True, amp="fp16", out=str(tmp_path / "q"))
    assert any(issubclass(w.category, CnnlabWarning) and "--amp fp16" in str(w.message) for w in caught)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    train(epochs=1, threads=1, quiet=False, out=str(tmp_path / "p"))  # the progress display: stderr only
    out, err = capfd.readouterr()
    assert out == "" and "epoch 1/1" in err
