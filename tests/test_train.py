"""Training engine: a short digits run learns and writes its run directory; schedules, optimizer groups,
regularisers (weight decay, L1, EMA, early stopping, stochastic depth), checkpoint format, NaN guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.errors import ConfigError
from cnnlab.train import TrainConfig, train
from cnnlab.train.checkpoint import latest_info
from cnnlab.train.ema import ModelEma
from cnnlab.train.optim import LRSchedule, param_groups
from cnnlab.train.trainer import TrainingDiverged

QUICK = dict(epochs=3, threads=1, quiet=True)


def _weights_l(path, p=2):
    w = load_file(str(path))
    return sum(float(v.norm(p)) ** p for k, v in w.items() if v.ndim >= 2) ** (1 / p)


def test_short_digits_run_learns_and_writes_run_dir(tmp_path):
    out = tmp_path / "run"
    result = train(**QUICK, out=str(out))
    assert result.test_accuracy > 0.8  # chance is 0.1
    for name in ("config.json", "config.yaml", "classes.json", "metrics.jsonl", "model.safetensors", "result.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "lenet5" and cfg["data"] == "digits" and cfg["num_classes"] == 10
    assert cfg["in_channels"] == 1 and cfg["image_size"] == [32, 32] and cfg["model_options"] == {}
    assert json.loads((out / "classes.json").read_text())["classes"] == [str(i) for i in range(10)]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "images_per_s"} <= set(lines[0])
    assert lines[-1]["val_count"] == 360
    res = json.loads((out / "result.json").read_text())
    assert res["epochs"] == 3 and res["params"] == 61706 and res["seconds"] > 0
    assert res["test_accuracy"] == pytest.approx(result.test_accuracy) and res["test_count"] == 359
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(result.model.state_dict())
    info = latest_info(out)
    assert info["epoch"] == 3 and info["step"] == 0
    state = torch.load(out / "checkpoints" / info["state"], weights_only=True)  # no pickle needed
    assert state["rng"]["torch"].dtype == torch.uint8 and state["global_step"] == info["global_step"]


def test_config_file_unknown_key_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 2\nlr: 0.05\nmodel_opts: {act: relu}\n")
    cfg = TrainConfig.load(path, {"lr": 0.2})
    assert cfg.epochs == 2 and cfg.lr == 0.2 and cfg.model_opts == {"act": "relu"}
    path.write_text("epochs: 2\nlearning_rate: 0.05\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'learning_rate'"):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0).validate()


def test_weight_decay_skips_bn_and_bias():
    from cnnlab.models import build_model

    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    decay, no_decay = param_groups(model, 1e-4)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    assert len(param_groups(model, 1e-4, decay_bn_bias=True)) == 1


def _pytorch_lrs(make_scheduler, steps: int, steps_per_epoch: int, per_epoch: bool) -> list[float]:
    """The LR PyTorch's own scheduler gives before each of `steps` optimizer steps (the oracle)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, lrs = make_scheduler(opt), []
    for t in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if not per_epoch or (t + 1) % steps_per_epoch == 0:
            sched.step()
    return lrs


@pytest.mark.parametrize("schedule", ["step", "exponential", "cosine", "onecycle"])
def test_schedules_match_pytorch_schedulers(schedule):
    epochs, spe = 10, 7
    cfg = TrainConfig(schedule=schedule, epochs=epochs, lr=1.0, step_size=3, exp_gamma=0.8, min_lr=0.01)
    ours = [LRSchedule(cfg, spe).lr_at(t) for t in range(epochs * spe)]
    sched = torch.optim.lr_scheduler
    oracle = {"step": (lambda o: sched.StepLR(o, step_size=3, gamma=0.1), True),
              "exponential": (lambda o: sched.ExponentialLR(o, gamma=0.8), True),
              "cosine": (lambda o: sched.CosineAnnealingLR(o, T_max=epochs * spe, eta_min=0.01), False),
              "onecycle": (lambda o: sched.OneCycleLR(o, max_lr=1.0, total_steps=epochs * spe,
                                                      cycle_momentum=False), False)}[schedule]
    assert ours == pytest.approx(_pytorch_lrs(oracle[0], epochs * spe, spe, per_epoch=oracle[1]), rel=1e-9)


def test_warmup_is_linear_and_multiplies_any_schedule():
    s = LRSchedule(TrainConfig(schedule="warmup", lr=1.0, epochs=5), steps_per_epoch=10)  # 1 epoch by default
    assert [s.lr_at(t) for t in (0, 4, 9, 10, 49)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    cos = TrainConfig(schedule="cosine", lr=1.0, epochs=5)
    plain, warm = LRSchedule(cos, 10), LRSchedule(cos.replace(warmup_epochs=2), 10)
    assert warm.lr_at(4) == pytest.approx(plain.lr_at(4) * 5 / 20) and warm.lr_at(20) == plain.lr_at(20)


def test_optimizers_as_asked():
    from cnnlab.models import build_model
    from cnnlab.train.optim import build_optimizer

    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    assert not build_optimizer(model, TrainConfig(nesterov=False)).defaults["nesterov"]
    adam = build_optimizer(model, TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.1))
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in adam.param_groups] == [0.1, 0.0]
    assert type(build_optimizer(model, TrainConfig(optimizer="adamw"))) is torch.optim.AdamW


def test_plateau_divides_by_ten_and_cyclic_restarts():
    s = LRSchedule(TrainConfig(schedule="plateau", lr=1.0, plateau_patience=1), 10)
    for metric in (0.5, 0.6, 0.6, 0.6):
        s.epoch_end(metric)
    assert s.lr_at(0) == pytest.approx(0.1)
    c = LRSchedule(TrainConfig(snapshots=2, epochs=4, lr=1.0).validate(), 10)
    assert c.lr_at(0) == 1.0 and c.lr_at(19) < 0.01 and c.lr_at(20) == 1.0


def test_weight_decay_shrinks_weights_and_l1_sparsifies(tmp_path):
    base = dict(QUICK, optimizer="adam", lr=1e-3, schedule="constant", label_smoothing=0.0)
    plain = train(**base, weight_decay=0.0, out=str(tmp_path / "plain"))
    decayed = train(**{**base, "optimizer": "adamw"}, weight_decay=5.0, out=str(tmp_path / "wd"))
    plain_file = tmp_path / "plain" / "model.safetensors"
    assert _weights_l(tmp_path / "wd" / "model.safetensors") < 0.8 * _weights_l(plain_file)
    train(**base, weight_decay=0.0, l1=1e-3, out=str(tmp_path / "l1"))

    def small_fraction(path):
        w = [v.flatten() for v in load_file(str(path)).values() if v.ndim >= 2]
        return float((torch.cat(w).abs() < 1e-3).float().mean())

    assert small_fraction(tmp_path / "l1" / "model.safetensors") > 2 * small_fraction(plain_file)
    assert plain.test_accuracy > 0.5 and decayed.epochs == 3


def test_ema_differs_and_is_evaluated_when_asked(tmp_path):
    r = train(**QUICK, ema=True, ema_decay=0.9, out=str(tmp_path / "ema"))
    raw = load_file(str(tmp_path / "ema" / "model.safetensors"))
    ema = load_file(str(tmp_path / "ema" / "model_ema.safetensors"))
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    assert "ema_val_acc" in r.history[-1] and "ema_test_accuracy" in r.summary
    r2 = train(**QUICK, ema=True, ema_decay=0.9, ema_eval=True, out=str(tmp_path / "ema_eval"))
    kept = load_file(str(tmp_path / "ema_eval" / "model.safetensors"))
    ema_file = load_file(str(tmp_path / "ema" / "model_ema.safetensors"))
    assert torch.equal(kept["features.0.weight"], ema_file["features.0.weight"])
    assert r2.summary["weights"] == "ema"


def test_ema_decay_warmup_and_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(net, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    net[1].running_mean.fill_(1.0)
    ema.update(net)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.9))  # buffers averaged too


def test_early_stopping_restores_best_epoch(tmp_path):
    """After epoch 2 a hook wipes the weights at every epoch end, so the later epochs are strictly worse than
    the best: the run must stop after `early_stopping` bad epochs and end with the best epoch's exact weights
    (a run that kept its last weights would end with the wiped ones)."""
    seen, states = [], []

    def record_then_wreck(trainer, rec):
        seen.append(rec["val_acc"])
        states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        if rec["epoch"] >= 2:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.zero_()

    r = train(**dict(QUICK, epochs=12), early_stopping=2, out=str(tmp_path / "es"),
              hooks={"epoch_end": [record_then_wreck]})
    best = 1 + max(range(len(seen)), key=lambda i: (seen[i], -i))
    assert best in (1, 2) and max(seen[2:]) < seen[best - 1]  # the wiped epochs are worse
    assert r.summary["best_epoch"] == best and r.epochs == 4 and r.summary["stopped_early"]
    final = r.model.state_dict()
    assert all(torch.equal(final[k], states[best - 1][k]) for k in final)
    assert r.summary["val_accuracy"] == pytest.approx(seen[best - 1])


def test_drop_path_identity_in_eval_and_option_checked(tmp_path):
    from cnnlab.models import build_model
    from cnnlab.train.run import build

    class Digits:  # what run.build needs of a dataset
        image_shape, num_classes = (1, 32, 32), 10

    torch.manual_seed(0)
    model = build(TrainConfig(model="resnet18", drop_path_rate=0.5), Digits)
    plain = build_model("resnet18", num_classes=10, in_channels=1, input_size=(32, 32))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 32, 32)
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))  # eval: every residual branch kept, unscaled
    model.train()
    torch.manual_seed(1)
    outs = [model(x) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # train: branches really dropped at random
    with pytest.raises(ConfigError, match="stochastic-depth"):
        train(**QUICK, drop_path_rate=0.1, out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "nan"

    def poison(trainer):  # after the first epoch's checkpoint, make the weights non-finite
        if trainer.epoch == 1 and trainer.step == 3:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"epoch 2 by step 5") as exc:
        train(**QUICK, nan_check_every=5, out=str(out), hooks={"step_end": [poison]})
    assert "last good checkpoint: epoch 2 step 0" in str(exc.value)
    info = latest_info(out)
    assert info["epoch"] == 1 and info["step"] == 0
    w = load_file(str(out / "checkpoints" / info["weights"]))
    assert all(torch.isfinite(v).all() for v in w.values())


def test_dropout_rate_reaches_the_model():
    from cnnlab.train.run import build

    class Small:
        image_shape, num_classes = (3, 32, 32), 10

    rates = {m.p for m in build(TrainConfig(model="vgg11", dropout=0.3), Small).modules()
             if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3}


def test_grad_clipping_and_label_smoothing_applied(tmp_path):
    norms = []

    def grad_norm(trainer):  # gradients of the step just taken (cleared only by the next zero_grad)
        assert trainer.criterion.label_smoothing == 0.2
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters()])))

    train(**dict(QUICK, epochs=1), clip_grad=0.05, label_smoothing=0.2, out=str(tmp_path / "clip"),
          hooks={"step_end": [grad_norm]})
    assert len(norms) == 34 and max(norms) <= 0.05 * (1 + 1e-4) and min(norms) > 0.04  # clipped, not zeroed


def test_snapshot_ensemble_saves_one_snapshot_per_cycle(tmp_path):
    out = tmp_path / "snap"
    r = train(**dict(QUICK, epochs=4), snapshots=2, out=str(out))
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["snapshot-1.safetensors", "snapshot-2.safetensors"]
    a, b = (load_file(str(out / "snapshots" / n)) for n in snaps)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    final = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(b[k], final[k]) for k in b)  # the last snapshot is the end of the last cycle
    lrs = [rec["lr"] for rec in r.history]  # the LR at each epoch's end: the cosine cycle restarts after 2
    assert lrs[1] < lrs[0] and lrs[2] == pytest.approx(lrs[0]) and lrs[3] == pytest.approx(lrs[1])
    assert 0.5 < r.summary["ensemble_test_accuracy"] <= 1.0


def test_amp_modes_on_cpu():
    from cnnlab.train.trainer import _amp

    ctx, scaler, note = _amp("fp16", torch.device("cpu"))
    assert scaler is None and "fp32" in note and "--amp fp16" in note  # said, not silently ignored
    ctx, scaler, note = _amp("bf16", torch.device("cpu"))
    with ctx():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    assert note == "" and _amp("none", torch.device("cpu"))[2] == ""


def test_checkpoint_refuses_non_finite_weights(tmp_path):
    out = tmp_path / "nanw"

    def poison(trainer):  # weights go non-finite right before a checkpoint, while the loss so far was finite
        if trainer.global_step == 4:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDiverged, match="last good checkpoint: epoch 1 step 2"):
        train(**QUICK, checkpoint_every=2, nan_check_every=1000, out=str(out), hooks={"step_end": [poison]})
    assert latest_info(out)["global_step"] == 2


def test_train_function_is_exported_under_its_own_name_and_lr_find_survives_submodule_import():
    import cnnlab
    import cnnlab.train.scoring  # once loaded, a same-named submodule would shadow the function
    import cnnlab.train.lr_range

    assert type(cnnlab.train).__name__ == "module" and not callable(cnnlab.train)  # no module-class swap
    assert cnnlab.train_model is cnnlab.train.train and cnnlab.train.config.TrainConfig is TrainConfig
    assert callable(cnnlab.train.lr_find) and cnnlab.train.lr_find.__module__ == "cnnlab.train"
    assert callable(cnnlab.train.evaluate) and cnnlab.evaluate is cnnlab.train.evaluate


@pytest.mark.parametrize("idle,world,expected", [(1.9, 1, 2), (1.2, 1, 1), (0.1, 1, 1), (2.0, 2, 1)])
def test_auto_threads_uses_the_idle_cores(monkeypatch, idle, world, expected):
    from cnnlab.train import run

    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run, "idle_cores", lambda: idle)
    assert run.auto_threads(world) == expected


def test_idle_cores_sees_a_busy_core():
    from cnnlab.train.run import idle_cores

    if idle_cores() is None:
        pytest.skip("no /proc/stat on this platform")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        idle = idle_cores(0.5)
    finally:
        spinner.kill()
    assert idle <= (os.cpu_count() or 1) - 0.5  # at least half a core taken by the spinner


def test_resume_restores_the_interrupted_runs_thread_count(tmp_path, monkeypatch):
    from cnnlab.train import run

    monkeypatch.setattr(run, "auto_threads", lambda world=1: 2)
    out = tmp_path / "run"
    train(**{**QUICK, "epochs": 1, "threads": 0}, out=str(out))   # auto picks 2
    state = torch.load(out / "checkpoints" / latest_info(out)["state"], weights_only=True)
    assert state["threads"] == 2
    monkeypatch.setattr(run, "auto_threads", lambda world=1: 1)   # the machine got busier since
    cfg = (out / "config.yaml").read_text().replace("epochs: 1", "epochs: 2")
    (out / "config.yaml").write_text(cfg)
    train(resume=str(out))
    assert torch.get_num_threads() == 2


def test_resume_keeps_the_saved_class_mapping(tmp_path):
    """A class folder added after training started must not shift labels when the run resumes."""
    from PIL import Image

    root = tmp_path / "shapes"
    for k, name in enumerate(["b_dark", "c_light"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.new("L", (8, 8), color=40 + 160 * k + i).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    train(model="conv3-4 > relu > gap > fc2", data=str(root), epochs=1, threads=1, quiet=True, out=str(out))
    (root / "a_new").mkdir()                         # sorts first: would become label 0
    for i in range(12):
        Image.new("L", (8, 8), color=i).save(root / "a_new" / f"{i}.png")
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("epochs: 1", "epochs: 2"))
    resumed = train(resume=str(out))
    assert json.loads((out / "classes.json").read_text())["classes"] == ["b_dark", "c_light"]
    assert resumed.model.num_classes == 2
