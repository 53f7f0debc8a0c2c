"""Freezing by stage during real training runs: frozen weights and BN statistics bit-for-bit unchanged under
each --bn policy, BN held in eval mode through model.train(), per-group learning rates equal to PyTorch's
OneCycleLR with per-group max_lr at every step, gradual unfreezing top stage first, bitwise resume (without
reading --init again), and one-line errors for bad specs."""

from __future__ import annotations

import math
import os
import signal
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnlab.errors import CnnlabWarning, ConfigError
from cnnlab.models import build_model
from cnnlab.train import train
from cnnlab.transfer.freeze import StageFreezer, parse_freeze, parse_lr_mult, resolve_freeze

# ResNet-18 with the CIFAR stem on 16x16 grey digits: small enough to train a step in a test.
RESNET = dict(model="resnet18", model_opts={"stem": "cifar"}, image_size=16, limit_per_class=5, batch_size=16,
              epochs=1, threads=1, quiet=True)
FROZEN_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")  # stem..stage3, by torchvision's names


def _source_weights(path, seed=0):
    """A ResNet-18 state dict with non-trivial BN statistics and affine parameters, saved as --init file."""
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=10, in_channels=1, input_size=(16, 16), stem="cifar")
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith(("running_mean", "bias")):
            v.copy_(torch.randn_like(v) * 0.1)
        elif k.endswith("running_var") or (k.endswith("weight") and v.ndim == 1):
            v.copy_(torch.rand_like(v) + 0.5)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def _split(state, after):
    frozen = {k: v for k, v in state.items() if k.startswith(FROZEN_PREFIXES)}
    return frozen, {k: v for k, v in after.items() if k.startswith(FROZEN_PREFIXES)}


@pytest.mark.parametrize("bn", ["freeze", "affine", "train"])
def test_fine_tuning_epoch_keeps_frozen_stages_bit_for_bit(tmp_path, bn):
    src = tmp_path / "src.safetensors"
    before = _source_weights(src)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        result = train(RESNET, init=str(src), freeze="up-to:stage3", bn=bn, out=str(tmp_path / "run"))
    after = {k: v.detach() for k, v in result.model.state_dict().items()}
    for key, value in before.items():
        if not key.startswith(FROZEN_PREFIXES):
            continue
        is_bn_affine = key.endswith(("weight", "bias")) and value.ndim == 1
        is_bn_stat = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        moved = (bn == "affine" and is_bn_affine) or (bn == "train" and is_bn_stat)
        assert torch.equal(after[key], value) != moved, (bn, key)
    # what was not frozen did train: stage4's convs, BN statistics and the (re-used, 10-class) head
    for key in ("layer4.1.conv2.weight", "layer4.1.bn2.running_mean", "fc.weight"):
        assert not torch.equal(after[key], before[key]), key
    # the CLI's note: frozen/trainable counts equal the parameters under those names
    model = build_model("resnet18", num_classes=10, in_channels=1, input_size=(16, 16), stem="cifar")
    frozen_n = sum(p.numel() for n, p in model.named_parameters() if n.startswith(FROZEN_PREFIXES))
    total = sum(p.numel() for p in model.parameters())
    if bn == "freeze":
        text = [str(w.message) for w in caught if "--freeze" in str(w.message)][0]
        assert f"frozen stem, stage1, stage2, stage3 ({frozen_n:,} parameters)" in text
        assert f"trainable stage4, head ({total - frozen_n:,} parameters)" in text
        assert result.summary["freeze"]["frozen_params"] == frozen_n


def test_frozen_bn_stays_in_eval_mode_through_model_train():
    model = build_model("resnet18", num_classes=10, in_channels=1, input_size=(16, 16), stem="cifar")
    freezer = StageFreezer(model, "up-to:stage2", "freeze")
    freezer.set_epoch(0)
    model.train()
    assert not model.bn1.training and not model.layer2[1].bn2.training
    assert model.layer3[0].bn1.training and model.training
    model.eval()
    model.train(True)
    assert not model.layer1[0].bn1.training
    StageFreezer(model, "up-to:stage2", "train").set_epoch(0)  # policy "train": statistics adapt
    model.train()
    assert model.bn1.training
    x = torch.randn(4, 1, 16, 16)
    before = model.bn1.running_mean.clone()
    model(x)
    assert not torch.equal(before, model.bn1.running_mean)


LENET_STAGES = {"features.0": "stem", "features.3": "stage1", "features.6": "stage2", "classifier": "head"}


def _lenet_stage(name: str) -> str:
    """LeNet-5 parameter name → stage: C1, C3, C5 and the classifier (not through cnnlab's stages())."""
    return next(s for prefix, s in LENET_STAGES.items() if name.startswith(prefix + "."))


def test_per_group_learning_rates_match_onecycle_with_per_group_max_lr_at_every_step(tmp_path):
    mult = {"head": 1.0, "stage2": 0.1, "stage1": 0.01, "stem": 0.01}
    seen = []

    def record(trainer):
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        seen.append({names[id(p)]: g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]})

    cfg = dict(epochs=3, lr=0.2, lr_mult="head=1,stage2=0.1,*=0.01", limit_per_class=5, batch_size=16, threads=1,
               quiet=True)
    train(cfg, out=str(tmp_path / "run"), hooks={"step_end": [record]})
    # oracle: PyTorch's OneCycleLR over one group per stage whose max_lr carries the stage's multiplier
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in mult]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.2 * m for m in mult.values()], total_steps=len(seen))
    assert len(seen) == 3 * 2  # 30 training images / 16 per batch = 2 steps per epoch
    for step, lrs in enumerate(seen):
        expected = dict(zip(mult, (g["lr"] for g in opt.param_groups)))
        assert len(lrs) == 10  # every parameter tensor of LeNet-5 is in a group
        for name, lr in lrs.items():
            assert math.isclose(lr, expected[_lenet_stage(name)], rel_tol=1e-9), (step, name, lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": no training here
            sched.step()


def test_gradual_unfreezing_releases_stages_top_down(tmp_path):
    states, trainable = [], []

    def at_start(trainer):
        flags = {}
        for name, p in trainer.model.named_parameters():
            flags.setdefault(_lenet_stage(name), set()).add(p.requires_grad)
        trainable.append({s for s, f in flags.items() if f == {True}})
        states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    result = train(epochs=4, threads=1, quiet=True, limit_per_class=12, freeze="all-but-head", unfreeze_every=1,
                   out=str(tmp_path / "run"), hooks={"epoch_start": [at_start]})
    assert trainable == [{"head"}, {"head", "stage2"}, {"head", "stage2", "stage1"},
                         {"head", "stage2", "stage1", "stem"}]
    states.append(result.model.state_dict())
    for stage, released in (("stage2", 1), ("stage1", 2), ("stem", 3)):
        key = next(p for p, s in LENET_STAGES.items() if s == stage) + ".weight"
        for epoch in range(released):  # unchanged by every epoch it was frozen for
            assert torch.equal(states[epoch][key], states[epoch + 1][key]), (stage, epoch)
        assert not torch.equal(states[released][key], states[released + 1][key]), stage
    counts = [r["trainable_params"] for r in result.history]
    assert counts == sorted(counts) and len(set(counts)) == 4


def test_resume_with_freeze_and_unfreezing_is_bitwise_and_does_not_reread_init(tmp_path):
    src = tmp_path / "src.safetensors"
    torch.manual_seed(5)
    save_file(build_model("lenet5", num_classes=10).state_dict(), str(src))
    cfg = dict(epochs=3, threads=1, quiet=True, limit_per_class=15, init=str(src), freeze="up-to:stage1",
               unfreeze_every=1, lr_mult="head=1,*=0.3")

    def interrupt(trainer):
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "int"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=str(out), hooks={"step_end": [interrupt]})
    src.rename(tmp_path / "moved.safetensors")  # the checkpoint holds the weights: --init is not read again
    resumed = train(resume=out)
    (tmp_path / "moved.safetensors").rename(src)
    reference = train(cfg, out=str(tmp_path / "ref"))
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a file carries no class names: LeNet-5's 10-class head fits the 10 digits and is loaded too
    assert resumed.summary["init"]["loaded"] == reference.summary["init"]["loaded"] == 10


def test_specs_parse_and_resolve():
    assert parse_freeze("all-but-head") == ("all-but-head", ())
    assert parse_freeze("up-to:stage3") == ("up-to", ("stage3",))
    assert parse_freeze(" stem , stage1 ") == ("list", ("stem", "stage1"))
    assert parse_lr_mult("head=1,stage4=0.1,*=0.01") == {"head": 1.0, "stage4": 0.1, "*": 0.01}
    names = ("stem", "stage1", "stage2", "stage3", "stage4", "head")
    assert resolve_freeze("up-to:stage3", names) == ["stem", "stage1", "stage2", "stage3"]
    assert resolve_freeze("stage2,stem", names) == ["stem", "stage2"]
    assert resolve_freeze("all-but-head", names) == list(names[:-1])
    for bad in ("up-to:head", "stage0", "layer1", "stem,"):
        with pytest.raises(ConfigError):
            parse_freeze(bad)
    for bad in ("head", "head=x", "stage1=-1", "head=1,head=2", "layer4=0.1"):
        with pytest.raises(ConfigError):
            parse_lr_mult(bad)
    with pytest.raises(ConfigError, match="has no stage 'stage4'; its stages: stem, stage1, stage2, head"):
        resolve_freeze("up-to:stage4", ("stem", "stage1", "stage2", "head"), "lenet5")


def _one_line(capsys, argv, *needles):
    from cnnlab.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_cli_transfer_option_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = str(tmp_path / "run")
    _one_line(capsys, ["train", "--freeze", "layer1", "--out", out], "--freeze layer1", "not a stage name")
    _one_line(capsys, ["train", "--freeze", "up-to:stage4", "--out", out], "lenet5", "no stage 'stage4'",
              "stem, stage1, stage2, head")
    _one_line(capsys, ["train", "--lr-mult", "stage9=0.1", "--out", out], "--lr-mult", "no stage 'stage9'")
    _one_line(capsys, ["train", "--lr-mult", "head:1", "--out", out], "--lr-mult", "STAGE=FACTOR")
    _one_line(capsys, ["train", "--unfreeze-every", "2", "--out", out], "--unfreeze-every", "--freeze")
    from cnnlab.cli import main

    with pytest.raises(SystemExit) as exc:  # argparse's own one-line usage error
        main(["train", "--bn", "sometimes", "--out", out])
    assert exc.value.code == 2 and "--bn: invalid choice" in capsys.readouterr().err
    _one_line(capsys, ["train", "--init", str(tmp_path / "nope.pt"), "--out", out], "no such file or run directory")
    _one_line(capsys, ["train", "--init", "imagenet", "--out", out], "no published ImageNet weights for 'lenet5'",
              "resnet18")
    _one_line(capsys, ["train", "alexnet", "--init", "imagenet", "--out", out], "one weird trick")
    _one_line(capsys, ["train", "resnet18", "--init", "torchvision:vgg16", "--out", out], "are for vgg16")
    _one_line(capsys, ["train", "--init", "ftp://x/y.pt", "--out", out], "only http:// and https://")
    _one_line(capsys, ["train", "--init", "a.pt", "--init-sha256", "xyz", "--out", out], "--init-sha256")
    _one_line(capsys, ["train", "--init-sha256", "abcdef12", "--out", out], "needs --init")
    assert not (tmp_path / "run").exists()
