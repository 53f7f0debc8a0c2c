"""GoogLeNet, ResNet / plain nets and MobileNet v1: parameter counts against torchvision and the papers,
torchvision state-dict compatibility, shapes at canonical and small inputs, stochastic depth,
shortcut structure, geometry errors and the ConvNet interface."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from param_counts import EXPECTED_PARAMS
from torch import nn

from cnnlab.errors import ConfigError, GeometryError
from cnnlab.models import build_model, list_models
from cnnlab.models.googlenet import GoogLeNetOutputs
from cnnlab.models.resnet import BasicBlock, Bottleneck

# The models of this file's families; their counts are the shared reference (param_counts.py): ResNets and
# GoogLeNet are torchvision's published counts; plain nets are ResNet minus its three projection shortcuts
# (173,824 params); MobileNet v1 is the paper's 4.2M (Keras: 4,231,976 trainable).
REGISTERED_PARAMS = {name: EXPECTED_PARAMS[name] for name in (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34", "googlenet",
    "mobilenet_v1")}




def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str, **options) -> nn.Module:
    """Build without allocating weights (meta tensors): param counts and state-dict shapes are free."""
    with torch.device("meta"):
        return build_model(name, **options)


# --- parameter counts ------------------------------------------------------------------------------

def test_all_models_of_this_issue_are_registered():
    names = {m.name for m in list_models()}
    assert set(REGISTERED_PARAMS) <= names
    for name in REGISTERED_PARAMS:
        info = next(m for m in list_models() if m.name == name)
        assert info.input_size == (224, 224) and info.num_classes == 1000 and info.in_channels == 3


@pytest.mark.parametrize("name", sorted(REGISTERED_PARAMS))
def test_param_count_canonical(name):
    assert n_params(build_meta(name)) == REGISTERED_PARAMS[name]


@pytest.mark.parametrize("options, expected", [
    ({"aux_logits": True}, 13_004_888),            # torchvision googlenet(aux_logits=True)
    ({"branch3_kernel": 5}, 7_005_832),            # the paper's true 5x5 convs in branch 3
])
def test_googlenet_variant_counts(options, expected):
    assert n_params(build_meta("googlenet", **options)) == expected


@pytest.mark.parametrize("alpha, exact, paper_millions", [
    (1.0, 4_231_976, 4.2), (0.75, 2_585_560, 2.6), (0.5, 1_331_592, 1.3), (0.25, 470_072, 0.5)])
def test_mobilenet_width_multiplier_matches_table6(alpha, exact, paper_millions):
    count = n_params(build_meta("mobilenet_v1", width_mult=alpha))
    assert count == exact
    assert round(count / 1e6, 1) == paper_millions


def test_option_a_shortcut_has_no_extra_parameters():
    # The paper's Fig. 4 comparison: residual nets with zero-padding shortcuts cost what plain nets do.
    assert n_params(build_meta("resnet18", shortcut="A")) == REGISTERED_PARAMS["plain18"]
    assert n_params(build_meta("resnet34", shortcut="A")) == REGISTERED_PARAMS["plain34"]


# --- torchvision state-dict compatibility ------------------------------------------------------------
# The references below are generated from torchvision's naming rules independently of cnnlab's code.

def _bn(prefix: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
            (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]


def torchvision_resnet_keys(bottleneck: bool, layers, num_classes=1000) -> "OrderedDict[str, tuple]":
    keys = [("conv1.weight", (64, 3, 7, 7))] + _bn("bn1", 64)
    expansion, in_ch = (4 if bottleneck else 1), 64
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for b in range(n):
            p, out = f"layer{s}.{b}", planes * expansion
            if bottleneck:
                keys += [(f"{p}.conv1.weight", (planes, in_ch, 1, 1))] + _bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                keys += [(f"{p}.conv3.weight", (out, planes, 1, 1))] + _bn(f"{p}.bn3", out)
            else:
                keys += [(f"{p}.conv1.weight", (planes, in_ch, 3, 3))] + _bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            if b == 0 and (s > 1 or in_ch != out):
                keys += [(f"{p}.downsample.0.weight", (out, in_ch, 1, 1))] + _bn(f"{p}.downsample.1", out)
            in_ch = out
    keys += [("fc.weight", (num_classes, 512 * expansion)), ("fc.bias", (num_classes,))]
    return OrderedDict(keys)


# torchvision's GoogLeNet as published (pytorch/vision, torchvision/models/googlenet.py), written out here
# as literal data so that the reference does not come from cnnlab's own INCEPTION_SPECS:
#   self.inception3a = inception_block(192, 64, 96, 128, 16, 32, 32)  ... through inception5b;
#   Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj): branch1 = BasicConv2d 1x1,
#   branch2 = 1x1 then 3x3, branch3 = 1x1 then 3x3 ("kernel_size=3 instead of 5 is a known bug", issue 906),
#   branch4 = MaxPool2d then BasicConv2d 1x1; BasicConv2d = Conv2d(bias=False) + BatchNorm2d(eps=0.001).
#   Stem: conv1 BasicConv2d(3, 64, 7), conv2 (64, 64, 1), conv3 (64, 192, 3); InceptionAux(512 | 528):
#   conv BasicConv2d(in, 128, 1), fc1 Linear(2048, 1024), fc2 Linear(1024, num_classes); fc Linear(1024, K).
#   Registration order: conv1..conv3, inception3a..5b, aux1, aux2, fc.
TORCHVISION_INCEPTION = (
    # name,          in, 1x1, 3x3red, 3x3, 5x5red, 5x5, pool_proj
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)


def torchvision_googlenet_keys(aux: bool, num_classes=1000) -> "OrderedDict[str, tuple]":
    def basic(prefix, cin, cout, k):
        return [(f"{prefix}.conv.weight", (cout, cin, k, k))] + _bn(f"{prefix}.bn", cout)

    keys = basic("conv1", 3, 64, 7) + basic("conv2", 64, 64, 1) + basic("conv3", 64, 192, 3)
    for name, cin, c1, c3r, c3, c5r, c5, pp in TORCHVISION_INCEPTION:
        keys += basic(f"{name}.branch1", cin, c1, 1)
        keys += basic(f"{name}.branch2.0", cin, c3r, 1) + basic(f"{name}.branch2.1", c3r, c3, 3)
        keys += basic(f"{name}.branch3.0", cin, c5r, 1) + basic(f"{name}.branch3.1", c5r, c5, 3)
        keys += basic(f"{name}.branch4.1", cin, pp, 1)
    if aux:
        for a, cin in (("aux1", 512), ("aux2", 528)):
            keys += basic(f"{a}.conv", cin, 128, 1)
            keys += [(f"{a}.fc1.weight", (1024, 2048)), (f"{a}.fc1.bias", (1024,)),
                     (f"{a}.fc2.weight", (num_classes, 1024)), (f"{a}.fc2.bias", (num_classes,))]
    keys += [("fc.weight", (num_classes, 1024)), ("fc.bias", (num_classes,))]
    return OrderedDict(keys)


def test_googlenet_bn_is_torchvisions():
    # The state dict cannot show BatchNorm's eps; torchvision's BasicConv2d uses 0.001, not PyTorch's 1e-5.
    bns = [m for m in build_meta("googlenet").modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 + 9 * 6 and all(m.eps == 0.001 for m in bns)


def shapes(model: nn.Module) -> "OrderedDict[str, tuple]":
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


RESNET_LAYOUT = {"resnet18": (False, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)),
                 "resnet50": (True, (3, 4, 6, 3)), "resnet101": (True, (3, 4, 23, 3)),
                 "resnet152": (True, (3, 8, 36, 3))}
# torchvision's state-dict sizes (parameters + BN buffers incl. num_batches_tracked).
TORCHVISION_KEY_COUNTS = {"resnet18": 122, "resnet34": 218, "resnet50": 320, "resnet101": 626, "resnet152": 932}


@pytest.mark.parametrize("name", sorted(RESNET_LAYOUT))
def test_resnet_state_dict_matches_torchvision(name):
    got = shapes(build_meta(name))
    assert got == torchvision_resnet_keys(*RESNET_LAYOUT[name])  # same names, shapes and order
    assert len(got) == TORCHVISION_KEY_COUNTS[name]


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_state_dict_matches_torchvision(aux):
    got = shapes(build_meta("googlenet", aux_logits=aux))
    assert got == torchvision_googlenet_keys(aux)
    assert len(got) == (364 if aux else 344)


def test_known_torchvision_keys_spot_check():
    r18, r50 = shapes(build_meta("resnet18")), shapes(build_meta("resnet50"))
    assert r18["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert r18["layer4.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert r18["fc.weight"] == (1000, 512)
    assert r50["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert r50["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert r50["fc.weight"] == (1000, 2048)
    g = shapes(build_meta("googlenet", aux_logits=True))
    assert g["inception3a.branch2.1.conv.weight"] == (128, 96, 3, 3)
    assert g["inception3a.branch3.1.conv.weight"] == (32, 16, 3, 3)   # torchvision's "5x5" is 3x3
    assert g["aux1.fc1.weight"] == (1024, 2048)
    assert g["aux2.conv.conv.weight"] == (128, 528, 1, 1)
    p5 = shapes(build_meta("googlenet", branch3_kernel=5))
    assert p5["inception3a.branch3.1.conv.weight"] == (32, 16, 5, 5)


@pytest.mark.parametrize("name, reference", [
    ("resnet18", lambda: torchvision_resnet_keys(False, (2, 2, 2, 2))),
    ("googlenet", lambda: torchvision_googlenet_keys(True))])
def test_torchvision_named_state_dict_loads_strictly(name, reference):
    torch.manual_seed(0)
    sd = OrderedDict((k, torch.randn(s) if s else torch.tensor(7)) for k, s in reference().items())
    options = {"aux_logits": True} if name == "googlenet" else {}
    model = build_model(name, **options)
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.state_dict()["fc.weight"], sd["fc.weight"])
    # The default GoogLeNet (no aux heads) takes the official file without its aux keys.
    if name == "googlenet":
        plain = build_model("googlenet")
        plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith("aux")}, strict=True)


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "mobilenet_v1"])
def test_saved_state_dict_round_trips(name, tmp_path):
    torch.manual_seed(0)
    a, b = build_model(name, input_size=64).eval(), build_model(name, input_size=64).eval()
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b.load_state_dict(torch.load(tmp_path / "w.pt"), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# --- forward shapes --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REGISTERED_PARAMS))
def test_forward_canonical_input(name):
    model = build_model(name).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
        assert feats.shape == (1, *model.feature_shape)
        assert model.forward_head(feats).shape == (1, 1000)
        if name == "mobilenet_v1":
            assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name, size, options, feature_hw", [
    ("resnet18", 32, {}, (1, 1)), ("resnet18", 64, {}, (2, 2)),
    ("resnet18", 32, {"stem": "cifar"}, (4, 4)), ("plain18", 32, {"stem": "cifar"}, (4, 4)),
    ("resnet50", 64, {}, (2, 2)), ("googlenet", 32, {}, (1, 1)), ("googlenet", 64, {}, (2, 2)),
    ("mobilenet_v1", 32, {}, (1, 1)), ("mobilenet_v1", 64, {"width_mult": 0.25}, (2, 2)),
])
def test_forward_small_input(name, size, options, feature_hw):
    model = build_model(name, num_classes=10, input_size=size, **options).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.forward_features(x).shape[2:] == feature_hw
    assert model.feature_shape[1:] == feature_hw  # the geometry arithmetic agrees with the forward


def test_googlenet_too_small_input_is_caught_before_forward():
    with pytest.raises(GeometryError) as err:
        build_model("googlenet", input_size=14)
    assert "maxpool3" in str(err.value) and "(W - F + 2P)/S + 1" in str(err.value)


@pytest.mark.parametrize("size", [10, 11, 14, 15, 16, 23, 31])
def test_googlenet_geometry_check_agrees_with_pytorch(size):
    # ceil_mode pools accept overhanging windows: 15x15 runs in PyTorch although F > W at maxpool3.
    model = build_model("googlenet", input_size=64).eval()
    try:
        expected = model.check_geometry((size, size))
    except GeometryError:
        expected = None
    try:
        with torch.no_grad():
            got = tuple(model.forward_features(torch.randn(1, 3, size, size)).shape[1:])
    except RuntimeError:
        got = None
    assert got == expected
    with pytest.raises(GeometryError):
        build_model("resnet18", input_size=(0, 32))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        build_model("resnet18", stem="tiny")
    with pytest.raises(ConfigError):
        build_model("resnet18", drop_path_rate=1.0)
    with pytest.raises(ConfigError):
        build_model("googlenet", branch3_kernel=7)
    with pytest.raises(ConfigError):
        build_model("plain18", drop_path_rate=0.1)  # not an option of plain nets


# --- GoogLeNet auxiliary heads and variants -------------------------------------------------------------

def test_googlenet_aux_outputs_only_in_training():
    model = build_model("googlenet", num_classes=7, input_size=64, aux_logits=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert [t.shape for t in out] == [(2, 7)] * 3
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 7)
    plain = build_model("googlenet", num_classes=7, input_size=64).train()
    with torch.no_grad():
        assert isinstance(plain(x), torch.Tensor) and plain(x).shape == (2, 7)


def test_googlenet_paper_variant_without_bn():
    model = build_model("googlenet", batch_norm=False, branch3_kernel=5, input_size=64).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.inception4a.branch3[1].conv.kernel_size == (5, 5)
    assert model.conv1.conv.bias is not None
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_googlenet_transform_input_maps_imagenet_stats_to_unit_range():
    model = build_model("googlenet", transform_input=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = model._transform_input((pixels - mean) / std)
    assert torch.allclose(out, pixels * 2 - 1, atol=1e-6)


# --- ResNet blocks: shortcuts, plain nets, stochastic depth -----------------------------------------

def _zero_convs(block: nn.Module) -> None:
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)


def test_plain_block_has_no_shortcut_while_residual_block_passes_input():
    plain, res = build_model("plain18").eval(), build_model("resnet18").eval()
    assert not any(b.residual or b.downsample is not None for b in plain.blocks())
    assert all(b.residual for b in res.blocks())
    assert sum(b.downsample is not None for b in res.blocks()) == 3
    x = torch.rand(2, 64, 8, 8)  # non-negative, so relu(x) == x
    pb, rb = plain.layer1[0], res.layer1[0]
    _zero_convs(pb)
    _zero_convs(rb)
    with torch.no_grad():
        assert torch.count_nonzero(pb(x)) == 0   # no path around the (zeroed) convs
        assert torch.equal(rb(x), x)             # the identity shortcut carries the input


def test_bottleneck_layout_and_stride_in_3x3():
    model = build_meta("resnet50")
    blk = model.layer2[0]
    assert isinstance(blk, Bottleneck) and isinstance(build_meta("resnet34").layer1[0], BasicBlock)
    assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2)  # torchvision "v1.5"


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = build_model("resnet50", zero_init_residual=True).eval()
    assert all(torch.count_nonzero(b.last_bn.weight) == 0 for b in model.blocks())
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.layer1[1](x), x)


def test_option_a_shortcut_forward():
    model = build_model("resnet18", num_classes=10, input_size=32, shortcut="A", stem="cifar").eval()
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_stochastic_depth_probability_grows_linearly():
    model = build_meta("resnet34", drop_path_rate=0.5)
    probs = [b.drop_path.drop_prob for b in model.blocks()]
    total = len(probs)
    assert total == 16
    assert probs == pytest.approx([0.5 * l / total for l in range(1, total + 1)])
    assert probs[-1] == pytest.approx(0.5)
    assert all(b.drop_path.drop_prob == 0 for b in build_meta("resnet34").blocks())


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_stochastic_depth_eval_is_deterministic_and_train_is_random(mode):
    torch.manual_seed(0)
    sd_model = build_model("resnet18", num_classes=10, input_size=32, stem="cifar", drop_path_rate=0.9,
                           drop_path_mode=mode)
    ref = build_model("resnet18", num_classes=10, input_size=32, stem="cifar")
    ref.load_state_dict(sd_model.state_dict())  # same weights, no drop path
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        sd_model.eval(), ref.eval()
        a, b = sd_model(x), sd_model(x)
        assert torch.equal(a, b) and torch.equal(a, ref(x))  # identity on the drop path in eval
        deepest = sd_model.layer4[-1].train()
        assert deepest.drop_path.drop_prob == pytest.approx(0.9)
        h = torch.randn(32, 512, 2, 2)
        outs = [deepest(h) for _ in range(40)]  # p = 0.9: all 40 batches dropped has odds 0.9**40 < 2%
        assert any(not torch.equal(outs[0], o) for o in outs[1:])
        # A dropped branch is gone: the output is relu(input), the shortcut alone. The paper's mode
        # drops the whole mini-batch at once (all 32 samples or none), timm's mode sample by sample.
        dropped = [[torch.equal(o[i], torch.relu(h[i])) for i in range(32)] for o in outs]
        per_call = [sum(d) for d in dropped]
        assert 0 < sum(per_call) < 40 * 32
        if mode == "batch":
            assert set(per_call) <= {0, 32}
        else:
            assert any(0 < n < 32 for n in per_call)


def test_stochastic_depth_mode_is_checked():
    assert build_meta("resnet18", drop_path_rate=0.1).layer1[0].drop_path.mode == "batch"   # the paper's
    with pytest.raises(ConfigError, match="unknown stochastic-depth mode 'layer'"):
        build_model("resnet18", drop_path_rate=0.1, drop_path_mode="layer")


# --- ConvNet interface ---------------------------------------------------------------------------------

STAGES4 = ("stem", "stage1", "stage2", "stage3", "stage4", "head")


@pytest.mark.parametrize("name, stages, width", [
    ("resnet18", STAGES4, 512),
    ("resnet50", STAGES4, 2048),
    ("plain34", STAGES4, 512),
    ("googlenet", ("stem", "stage1", "stage2", "stage3", "head"), 1024),
    ("mobilenet_v1", ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "head"), 1024),
])
def test_interface_reset_classifier_and_pre_logits(name, stages, width):
    model = build_model(name, num_classes=10, input_size=64).eval()
    assert model.stage_names == stages and len(model.stages()) == len(stages)
    assert model.classifier_name == "fc" and model.get_classifier() is model.fc
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.ndim == 4 and feats.shape[1] == width
        assert model.forward_head(feats, pre_logits=True).shape == (2, width)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.num_classes == 5


def test_googlenet_reset_classifier_also_resets_aux_heads():
    model = build_model("googlenet", aux_logits=True, input_size=64)
    model.reset_classifier(3)
    assert model.aux1.fc2.out_features == 3 and model.aux2.fc2.out_features == 3
    with torch.no_grad():
        assert [t.shape[1] for t in model.train()(torch.randn(2, 3, 64, 64))] == [3, 3, 3]


def test_mobilenet_uses_depthwise_then_pointwise():
    model = build_meta("mobilenet_v1", width_mult=0.5)
    blocks = [b for s in model.stage_names[1:-1] for b in getattr(model, s)]
    assert len(blocks) == 13
    for b in blocks:
        dw, pw = b.dw.conv, b.pw.conv
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3)
        assert pw.groups == 1 and pw.kernel_size == (1, 1)
    assert model.fc.in_features == 512
    assert build_meta("mobilenet_v1").feature_shape == (1024, 7, 7)


def test_he_initialisation():
    torch.manual_seed(0)
    model = build_model("resnet50")
    conv = model.layer3[0].conv2  # 256 x 256 x 3 x 3: fan_out 2304, He std sqrt(2/2304)
    assert conv.weight.std().item() == pytest.approx((2 / 2304) ** 0.5, rel=0.05)
    bn = model.layer3[0].bn2
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
