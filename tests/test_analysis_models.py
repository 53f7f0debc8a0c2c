"""Every registered model: parameter totals exact, conv/linear MACs equal PyTorch's own FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab import summarize
from cnnlab.analysis.resolve import resolve_model
from cnnlab.models import list_models

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
