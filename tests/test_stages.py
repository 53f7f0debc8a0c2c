"""One meaning of "stage" on every family: stem, stage1…stageN, head; the stages partition the parameters,
and a stage ends where the resolution drops (checked against the papers' tables at 224×224)."""

import re

import pytest
import torch
from torch import nn

from cnnlab.layers import meta_device
from cnnlab.models import build_model, list_models
from cnnlab.train.optim import LRSchedule, build_optimizer
from cnnlab.train.config import TrainConfig

NOTATION = ["conv5-6p2 > relu > maxpool2 > conv5-16 > relu > maxpool2 > fc100 > relu > fc10",
            "conv3-8 > bn > relu > conv3-8 > relu > fc10", "fc300 > relu > fc10"]


def _names():
    return [m if isinstance(m, str) else m.name for m in list_models()]


def _build(name, **kw):
    with meta_device():
        return build_model(name, **kw)


@pytest.mark.parametrize("name", _names() + ["googlenet+aux"] + NOTATION)
def test_stages_partition_the_parameters_and_share_names(name):
    kw = {}
    if name == "googlenet+aux":
        name, kw = "googlenet", {"aux_logits": True}
    if name in NOTATION:
        kw = {"num_classes": 10, "in_channels": 1, "input_size": (28, 28)}
    model = _build(name, **kw)
    names = model.stage_names
    assert names[0] == "stem" and names[-1] == "head"
    assert all(re.fullmatch(r"stage[1-9]\d*", n) for n in names[1:-1])
    assert list(names[1:-1]) == [f"stage{i}" for i in range(1, len(names) - 1)]
    owner = {}
    for stage_name, stage in model.stages():
        for p in stage.parameters():
            assert id(p) not in owner, f"{stage_name} shares a parameter with {owner.get(id(p))}"
            owner[id(p)] = stage_name
    assert set(owner) == {id(p) for p in model.parameters()}
    assert all(owner[id(p)] == "head" for p in model.get_classifier().parameters())
    if kw.get("aux_logits"):
        assert all(owner[id(p)] == "head" for p in model.aux1.parameters())


# Output side of each stage at 224×224: VGG (Simonyan & Zisserman, Table 1: each max-pool halves 224 → 7),
# ResNet (He et al., Table 1: conv1 112, conv2_x 56 after the max-pool, conv3_x 28, conv4_x 14, conv5_x 7),
# MobileNet (Howard et al., Table 1: 112 after the first conv and the first dw block; each later stage starts
# with its stride-2 block: 56, 28, 14, 7).
@pytest.mark.parametrize("name, sizes", [
    ("vgg16", {"stem": 112, "stage1": 56, "stage2": 28, "stage3": 14, "stage4": 7}),
    ("vgg11_bn", {"stem": 112, "stage1": 56, "stage2": 28, "stage3": 14, "stage4": 7}),
    ("resnet18", {"stem": 56, "stage1": 56, "stage2": 28, "stage3": 14, "stage4": 7}),
    ("resnet50", {"stem": 56, "stage1": 56, "stage2": 28, "stage3": 14, "stage4": 7}),
    ("mobilenet_v1", {"stem": 112, "stage1": 112, "stage2": 56, "stage3": 28, "stage4": 14, "stage5": 7}),
    ("googlenet", {"stem": 28, "stage1": 14, "stage2": 7, "stage3": 7}),
    ("alexnet", {"stem": 27, "stage1": 13, "stage2": 6}),
    ("lenet5", {"stem": 14, "stage1": 5, "stage2": 1}),
])
def test_stage_outputs_have_the_papers_resolutions(name, sizes):
    model = _build(name)
    seen = {}
    hooks = [stage.output.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.shape[-1]))
             for n, stage in model.stages() if n != "head"]
    c, h, w = (model.in_channels, *model.input_size)
    with torch.no_grad():
        model(torch.zeros(1, c, h, w, device="meta"))
    for hook in hooks:
        hook.remove()
    assert seen == sizes


def test_per_group_lr_multipliers_survive_every_schedule():
    model = build_model("lenet5", num_classes=10)
    mult = {"head": 1.0, "stage2": 0.1, "*": 0.01}
    for schedule in ("constant", "step", "plateau", "exponential", "cosine", "onecycle", "cyclic", "warmup"):
        cfg = TrainConfig(epochs=4, schedule=schedule, warmup_epochs=0.5, lr=0.2,
                          snapshots=2 if schedule == "cyclic" else 0).validate()
        opt = build_optimizer(model, cfg, lr_mult=mult)
        by_stage = {n: {id(p) for p in st.parameters()} for n, st in model.stages()}

        def mult_of(group):
            ids = {id(p) for p in group["params"]}
            stage = next(n for n, s in by_stage.items() if ids & s)
            return mult.get(stage, mult["*"])

        sched = LRSchedule(cfg, steps_per_epoch=5)
        for step in range(20):
            base = sched.apply(opt, step)
            for group in opt.param_groups:
                assert group["lr"] == pytest.approx(base * mult_of(group), rel=1e-12), (schedule, step)
            if schedule == "plateau" and step % 5 == 4:
                sched.epoch_end(0.5)  # never improves: the plateau scale drops, the ratios must hold
        assert {mult_of(g) for g in opt.param_groups} == {1.0, 0.1, 0.01}


def test_stage_view_reaches_batch_norm_modes():
    model = build_model("resnet18", num_classes=3, input_size=32).train()
    model.get_stage("stem").eval()
    assert not model.bn1.training and model.layer1[0].bn1.training
    with pytest.raises(KeyError, match="stage9"):
        model.get_stage("stage9")
    assert isinstance(model.get_stage("head").output, nn.Linear)
