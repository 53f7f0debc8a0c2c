"""Every registered model: parameter totals exact, conv/linear MACs equal PyTorch's own FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab import summarize
from cnnlab.analysis.resolve import resolve_model
from cnnlab.models import build_model, list_models

NAMES = [m.name for m in list_models()]


@pytest.mark.parametrize("name", NAMES)
def test_totals_match_pytorch(name):
    model, _, size = resolve_model(name)  # built on the meta device: no weights allocated
    s = summarize(model, size)
    assert s.totals["params"] == sum(p.numel() for p in model.parameters())
    assert not s.uncounted
    # Independent count: FlopCounterMode counts 2 x MACs for convolution and (add)mm.
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros((1, *size), device="meta"))
    ours = sum(r.macs for r in s.layers if r.type in ("Conv2d", "Linear") and r.macs is not None)
    assert 2 * ours == counter.get_total_flops()


def test_literature_flops():
    # Published multiply-adds: VGG-16 15.5G, ResNet-50 4.1G, GoogLeNet 1.5G, MobileNet-v1 569M.
    macs = {n: summarize(*resolve_model(n)[::2]).totals["macs"] for n in
            ("vgg16", "resnet50", "googlenet", "mobilenet_v1")}
    assert macs["vgg16"] == pytest.approx(15.47e9, rel=0.01)
    assert macs["resnet50"] == pytest.approx(4.09e9, rel=0.01)
    assert macs["googlenet"] == pytest.approx(1.5e9, rel=0.02)
    assert macs["mobilenet_v1"] == pytest.approx(569e6, rel=0.01)


def test_real_weights_model_is_left_on_cpu():
    model, _, size = resolve_model("resnet18", meta=False)
    s = summarize(model, size)
    assert s.totals["params"] == 11_689_512
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())


def test_receptive_fields_of_branched_models_by_hand():
    # ResNet-18: conv1 7/2 -> 7 (j2); maxpool 3/2 -> 7+2*2 = 11 (j4); layer1, four 3x3: 11+4*2*4 = 43;
    # layer2: 3x3/2 -> 43+2*4 = 51 (j8), three more 3x3: 51+3*16 = 99; layer3: 99+2*8 = 115 (j16),
    # +3*32 = 211; layer4: 211+2*16 = 243 (j32), +3*64 = 435. The 1x1/2 shortcuts are smaller paths.
    # ResNet-50 (stride on the 3x3): 11, +3*8 = 35; +8, +3*16 = 91; +16, +5*32 = 267; +32, +2*64 = 427.
    # GoogLeNet (torchvision's 3x3 "5x5" branch): 7, 11, 11, 19, 27 (j8); 3a/3b +16 each: 59;
    # maxpool3 3/2: 75 (j16); 4a-4e +32 each: 235; maxpool4 2/2: 251 (j32); 5a/5b +64 each: 379.
    # VGG-16 212 and AlexNet 195 are distill.pub/2019/computing-receptive-fields' values.
    expected = {"resnet18": 435, "resnet50": 427, "googlenet": 379, "vgg16": 212, "alexnet": 195}
    for name, size in expected.items():
        model, _, input_size = resolve_model(name)
        rf = summarize(model, input_size).totals["largest_spatial_receptive_field"]
        assert rf["size"] == [size, size], name
        assert rf["jump"] == [32, 32], name
    model = build_model("googlenet", branch3_kernel=5)
    # The paper's true 5x5 branch: 3a/3b +32 each: 91; maxpool3: 107; 4a-4e +64 each: 427;
    # maxpool4 2/2: 443; 5a/5b +128 each: 699.
    assert summarize(model, (3, 224, 224)).totals["largest_spatial_receptive_field"]["size"] == [699, 699]
