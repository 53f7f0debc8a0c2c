"""summarize(): the lectures' hand-computed numbers, receptive fields on real data flow, conventions."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn import functional as F

from cnnlab import summarize
from cnnlab.analysis import SCHEMA_VERSION
from cnnlab.analysis.compare import depthwise_pair, predicted_depthwise_ratio
from cnnlab.errors import CnnlabError, GeometryError
from cnnlab.models import build_model


def rows_of(s, kind):
    return [r for r in s.layers if r.type == kind and r.ran]


def test_one_5x5_filter_on_3x32x32_matches_lecture():
    # Lecture 003: output 1x28x28; FLOPs = (2 x D1 x F^2) x D2 x H2 x W2 = (2*3*25)*1*28*28.
    s = summarize(nn.Conv2d(3, 1, 5), (3, 32, 32))
    (row,) = s.layers
    assert row.output_shape == [1, 1, 28, 28]
    assert row.params == 5 * 5 * 3 + 1 == 76
    assert row.macs == 5 * 5 * 3 * 28 * 28 == 58_800
    assert row.flops == 117_600
    assert row.activation_bytes == 28 * 28 * 4  # one float32 feature map
    assert summarize(nn.Conv2d(3, 10, 5), (3, 32, 32)).totals["params"] == 760  # "ten filters: 760"


def test_alexnet_per_layer_parameters_match_lecture_table():
    s = summarize(build_model("alexnet"), (3, 227, 227))
    convs = [r.params for r in rows_of(s, "Conv2d")]
    fcs = [r.params for r in rows_of(s, "Linear")]
    assert convs == [34_944, 614_656, 885_120, 1_327_488, 884_992]
    assert fcs == [37_752_832, 16_781_312, 4_097_000]
    assert sum(convs) == 3_747_200 and sum(fcs) == 58_631_144
    assert s.totals["params"] == 62_378_344
    share = {g["type"]: g["params_share"] for g in s.by_type}
    assert share["Linear"] == pytest.approx(58_631_144 / 62_378_344)  # "where are the 60M parameters?"
    assert s.by_type[0]["type"] == "Linear"


def test_lenet5_receptive_fields_match_lecture():
    s = summarize(build_model("lenet5"), (1, 32, 32))
    convs = [r.receptive_field for r in rows_of(s, "Conv2d")]
    pools = [r.receptive_field for r in rows_of(s, "AvgPool2d")]
    assert [c["size"] for c in convs] == [[5, 5], [14, 14], [32, 32]]
    assert [p["size"] for p in pools] == [[6, 6], [16, 16]]  # "receptive field up to 16x16"
    assert [p["jump"] for p in pools] == [[2, 2], [4, 4]]    # "input stride 2^#pools"
    assert convs[0]["centre"] == [2, 2]                      # first unit sees pixels 0..4
    assert rows_of(s, "Linear")[0].receptive_field["global"] is True


def test_depthwise_separable_ratio_is_lecture_formula():
    for d_in, d_out, f in ((32, 64, 3), (64, 128, 3), (16, 256, 5)):
        std, sep = depthwise_pair(d_in, d_out, f)
        a, b = summarize(std, (d_in, 14, 14)), summarize(sep, (d_in, 14, 14))
        assert Fraction(b.totals["flops"], a.totals["flops"]) == predicted_depthwise_ratio(d_out, f)
    # By hand: 1/64 + 1/9 = 73/576; MobileNet's 3x3 layers save "8 to 9 times".
    assert predicted_depthwise_ratio(64, 3) == Fraction(73, 576)
    assert 8 < 1 / predicted_depthwise_ratio(512, 3) < 9


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(3, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.pool(x)], 1)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=2, dilation=2)

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + x)


def test_branches_take_the_largest_field_and_dilation_counts():
    s = summarize(Inception(), (3, 16, 16))
    assert s.totals["largest_spatial_receptive_field"]["size"] == [5, 5]
    assert s.totals["output_receptive_field"]["size"] == [5, 5]  # the cat keeps the 5x5 branch
    r = summarize(Residual(), (3, 16, 16))
    assert r.totals["output_receptive_field"]["size"] == [3 + 2 * 2, 3 + 2 * 2]  # 3, then +(3-1)*2
    add = [row for row in r.layers if row.type == "add"]
    assert add and add[0].flops == 3 * 16 * 16 and add[0].macs == 0  # residual add: 1 FLOP per element


class Functional(nn.Module):
    """Windows given to F.conv2d / F.max_pool2d by keyword, as hand-written forwards often do."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 3, 3, 3))

    def forward(self, x):
        x = F.conv2d(x, self.w, stride=2, padding=1)
        return F.max_pool2d(x, kernel_size=3, stride=2)


def test_functional_windows_read_keyword_arguments():
    s = summarize(Functional(), (3, 16, 16))
    conv, pool = s.layers[:2]
    assert (conv.kernel, conv.stride, conv.padding) == ([3, 3], [2, 2], [1, 1])
    assert conv.output_shape == [1, 4, 8, 8] and conv.macs == 4 * 8 * 8 * 3 * 9
    # r: 3, then 3 + (3-1)*2 = 7; j: 2, then 4; centre: 0 + (1-1)*1 = 0, then 0 + (3-1)/2*2 = 2
    assert conv.receptive_field["size"] == [3, 3] and conv.receptive_field["jump"] == [2, 2]
    assert pool.receptive_field == {"size": [7, 7], "jump": [4, 4], "centre": [2, 2], "global": False,
                                    "unknown": False}
    assert "8.50" in conv.fit and "3.50" in pool.fit  # (16-3+2)/2+1 and (8-3)/2+1 do not fit
    with pytest.raises(GeometryError, match="8.50"):
        summarize(Functional(), (3, 16, 16), strict=True)


def test_does_not_fit_flag_and_strict():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=3))
    s = summarize(model, (1, 7, 7))
    assert s.layers[0].fit and "2.33" in s.layers[0].fit  # (7 - 3)/3 + 1 = 2.33: "does not fit"
    assert any("does not fit" in f for f in s.flags)
    with pytest.raises(GeometryError, match="2.33"):
        summarize(model, (1, 7, 7), strict=True)
    assert not summarize(nn.Conv2d(1, 1, 3, stride=2), (1, 7, 7)).flags  # (7-3)/2 + 1 = 3 fits


def test_too_small_input_is_one_line_geometry_error():
    with pytest.raises(GeometryError, match=r"\(W - F \+ 2P\)/S \+ 1"):
        summarize(build_model("lenet5"), (1, 8, 8))


def test_no_side_effects_and_shared_parameters_counted_once():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), conv, nn.Dropout(0.5))
    model.train()
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = summarize(model, (3, 8, 8))
    assert model.training and not model[1].training and model[4].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert s.totals["params"] == sum(p.numel() for p in model.parameters()) == 84 + 6
    convs = rows_of(s, "Conv2d")
    assert len(convs) == 2 and [c.params for c in convs] == [84, 0] and convs[1].receptive_field["size"] == [5, 5]


class WithAux(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.unused = nn.Linear(5, 5)  # never called (like an auxiliary head in eval): still counted

    def forward(self, x):
        return self.conv(x)


def test_frozen_parameters_and_unused_modules():
    model = WithAux()
    model.conv.weight.requires_grad_(False)
    s = summarize(model, (1, 5, 5))
    assert s.totals["frozen"] == 18 and s.totals["trainable"] == 2 + 30
    unused = [r for r in s.layers if not r.ran]
    assert [r.name for r in unused] == ["unused"] and unused[0].params == 30


class Odd(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


def test_uncountable_ops_are_listed_not_zero():
    s = summarize(nn.Sequential(nn.Conv2d(1, 2, 3), Odd()), (1, 6, 6))
    assert s.uncounted == {"cumsum": 1}
    row = [r for r in s.layers if r.type == "cumsum"][0]
    assert row.flops is None and "cumsum" in s.render("table")


def test_json_schema():
    d = summarize(build_model("lenet5"), (1, 32, 32)).to_dict()
    assert d["schema_version"] == SCHEMA_VERSION == 1
    assert {"model", "input_size", "batch_size", "conventions", "layers", "totals", "by_type", "flags",
            "uncounted", "notes"} <= set(d)
    assert {"name", "type", "kernel", "stride", "padding", "dilation", "groups", "input_shape", "output_shape",
            "params", "trainable", "frozen", "macs", "flops", "receptive_field", "activation_bytes", "fit",
            "ran"} == set(d["layers"][0])
    assert {"params", "trainable", "frozen", "macs", "flops", "activation_bytes", "param_bytes",
            "output_shape", "output_receptive_field", "largest_spatial_receptive_field",
            "uncounted_ops"} <= set(d["totals"])
    assert {"size", "jump", "centre", "global", "unknown"} <= set(d["layers"][0]["receptive_field"])


def test_model_that_cannot_run_is_one_line_error():
    with pytest.raises(CnnlabError, match="cannot"):
        summarize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(7, 2)), (3, 8, 8))


layer = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("max"), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1), st.just(1)),
    st.tuples(st.just("avg"), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1), st.just(1)),
)


class FunctionalStack(nn.Module):
    """The same conv/pool stack written with F.conv2d / F.max_pool2d / F.avg_pool2d keyword calls."""

    def __init__(self, modules):
        super().__init__()
        self.layers = nn.ModuleList(modules)

    def forward(self, x):
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                x = F.conv2d(x, m.weight, m.bias, stride=m.stride, padding=m.padding, dilation=m.dilation)
            elif isinstance(m, nn.MaxPool2d):
                x = F.max_pool2d(x, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding)
            else:
                x = F.avg_pool2d(x, m.kernel_size, m.stride, m.padding)
        return x


@settings(max_examples=40, deadline=None)
@given(st.lists(layer, min_size=1, max_size=5), st.integers(8, 40), st.booleans())
def test_shape_inference_agrees_with_real_forward(spec, size, functional):
    mods, ch = [], 2
    for kind, k, s, p, d in spec:
        p = min(p, k // 2)  # PyTorch pooling requires p <= k/2
        if kind == "conv":
            mods.append(nn.Conv2d(ch, 3, k, s, p, dilation=d))
            ch = 3
        else:
            mods.append((nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s, p))
    model = FunctionalStack(mods) if functional else nn.Sequential(*mods)
    try:
        expected = model(torch.zeros(1, 2, size, size)).shape
    except RuntimeError:
        # modules: the lectures' formula (GeometryError); functional calls: PyTorch's own one-line reason
        with pytest.raises(CnnlabError if functional else GeometryError):
            summarize(model, (2, size, size))
        return
    s = summarize(model, (2, size, size))
    assert [r for r in s.layers if r.ran][-1].output_shape == list(expected)
    assert s.totals["output_shape"] == list(expected)
    # jump is the product of strides; size grows by (k-1)*d*jump per layer (lecture recurrence)
    r, j = 1, 1
    for kind, k, st_, p, d in spec:
        r, j = r + (k - 1) * d * j, j * st_
    assert s.totals["output_receptive_field"]["size"] == [r, r]
    assert s.totals["output_receptive_field"]["jump"] == [j, j]
