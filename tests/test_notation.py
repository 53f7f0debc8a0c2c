"""The lectures' layer notation: grammar, defaults, the LeNet300-to-conv progression's parameter counts
(lecture 001, "Convolutional LeNet300 - Complexity"), one-line errors at the bad token, and geometry
checked before any forward."""

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.errors import ConfigError, GeometryError
from cnnlab.models.notation import NotationError, build_from_notation, parse

# The lecture's progression on 28x28x1 MNIST: Conv-6 -> FC-100 -> FC-10, + max pooling, + a second conv.
CONV6 = "conv5-6p2 > relu > fc100 > relu > fc10"
CONV6_POOL = "conv5-6p2 > relu > maxpool2 > fc100 > relu > fc10"
CONV6_16 = "conv5-6p2 > relu > maxpool2 > conv5-16p2 > relu > maxpool2 > fc100 > relu > fc10"

VGG16_TABLE = """conv3-64, conv3-64, maxpool, conv3-128, conv3-128, maxpool,
conv3-256, conv3-256, conv3-256, maxpool, conv3-512, conv3-512, conv3-512, maxpool,
conv3-512, conv3-512, conv3-512, maxpool, FC-4096, FC-4096, FC-1000, soft-max"""




def _mnist(spec: str, **kw):
    return cnnlab.build_model(spec, in_channels=1, input_size=(28, 28), **kw)


def _layer_counts(model: nn.Module) -> list[int]:
    return [sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("spec,layers,total", [
    # Lecture: 6*(5x5+1)*1 = 156; 100*(6*(28x28)) "= 400k" (really 470,400 weights + 100 biases); 10*100 = 1k.
    (CONV6, [156, 470_500, 1_010], 471_666),
    # With 2x2 max pooling the FC sees 6x14x14: 117,600 weights + 100 biases; lecture total ~118k.
    (CONV6_POOL, [156, 117_700, 1_010], 118_866),
    # Second conv: 16 filters of 5x5x6 + 16 biases = 2,416 (the lecture's 16*(5x5+1)*6 = 2,496 counts one
    # bias per input channel); FC-100 100*((16*7x7)+1) = 78,500 exactly as the lecture; total ~82k.
    (CONV6_16, [156, 2_416, 78_500, 1_010], 82_082),
])
def test_lenet300_to_conv_progression_matches_the_lecture(spec, layers, total):
    model = _mnist(spec)
    assert _layer_counts(model) == layers and sum(layers) == total
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_vgg_table_notation_equals_vgg16_parameter_count():
    with torch.device("meta"):
        model = cnnlab.build_model(VGG16_TABLE, input_size=224)
    assert sum(p.numel() for p in model.parameters()) == 138_357_544
    assert model.classifier[1].in_features == 512 * 7 * 7 and model.num_classes == 1000


@pytest.mark.parametrize("token,stride,padding,out", [
    ("conv3-8", 1, 1, 32),            # no p: "same" padding k // 2
    ("conv5-8p0", 1, 0, 28),          # "valid", as LeNet-5's C1
    ("conv3-8s2", 2, 1, 16),
    ("conv5-8s2p2", 2, 2, 16),
    ("conv5-8p2s2", 2, 2, 16),        # suffixes in either order
    ("conv7-8psame", 1, 3, 32),
    ("conv7-8p'same'", 1, 3, 32),
])
def test_conv_token_stride_and_padding(token, stride, padding, out):
    model = build_from_notation(token, input_size=32)
    conv = model.features[0]
    assert conv.stride == (stride, stride) and conv.padding == (padding, padding)
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == out


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spec,features", [
    ("dwconv3", 64 * 9 + 64),                                     # C*(F*F) + C
    ("dwconv5", 64 * 25 + 64),
    ("dwconv3 > conv1-128", (64 * 9 + 64) + (64 * 128 + 128)),     # depthwise-separable: 8,960
    ("conv3-128", 64 * 128 * 9 + 128),                            # the standard conv it replaces: 73,856
    ("dwconv3-128", 64 * 2 * 9 + 128),                            # channel multiplier 2
])
def test_depthwise_conv_parameter_counts(spec, features):
    model = build_from_notation(spec, in_channels=64, input_size=8, num_classes=10)
    assert sum(_params(m) for m in model.features) == features
    # The head is the appended Flatten + fc10 on the conv-only trunk's real output.
    width = model.features[-1].out_channels * 8 * 8
    assert _params(model.classifier) == width * 10 + 10


def test_depthwise_conv_filters_each_channel_on_its_own():
    model = build_from_notation("dwconv3s2 > bn > relu > conv1-16", in_channels=4, input_size=9)
    dw = model.features[0]
    assert dw.groups == dw.in_channels == dw.out_channels == 4
    assert dw.stride == (2, 2) and dw.padding == (1, 1) and dw.kernel_size == (3, 3)
    # Oracle: channel i of the output is the i-th channel alone through a 1-channel conv.
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        out = dw(x)
        assert out.shape == (2, 4, 5, 5)
        for i in range(4):
            alone = nn.functional.conv2d(x[:, i:i + 1], dw.weight[i:i + 1], dw.bias[i:i + 1], stride=2, padding=1)
            assert torch.allclose(out[:, i:i + 1], alone, atol=1e-6)
        assert model(x).shape == (2, 10)
    valid = build_from_notation("dwconv5p0", in_channels=3, input_size=12)
    assert valid.forward_features(torch.zeros(1, 3, 12, 12)).shape == (1, 3, 8, 8)


def test_depthwise_conv_is_notation_anywhere_a_model_name_is():
    # A lone dwconv token is recognised as notation (not looked up as a model name).
    model = cnnlab.build_model("dwconv3", in_channels=8, input_size=4)
    assert model.features[0].groups == 8 and model.num_classes == 10


def test_conv_only_network_gets_a_classifier():
    model = cnnlab.build_model("conv3-8 > relu > conv3-16 > relu", in_channels=1, input_size=6, num_classes=4)
    assert [type(m).__name__ for m in model.classifier] == ["Flatten", "Linear"]
    assert model.classifier[-1].in_features == 16 * 6 * 6 and model.classifier_name == "classifier.1"
    with torch.no_grad():
        assert model(torch.zeros(3, 1, 6, 6)).shape == (3, 4)


@pytest.mark.parametrize("token,cls,k,s", [("maxpool", nn.MaxPool2d, 2, 2), ("maxpool3s2", nn.MaxPool2d, 3, 2),
                                           ("avgpool4", nn.AvgPool2d, 4, 4)])
def test_pool_defaults(token, cls, k, s):
    pool = build_from_notation(f"conv3-4 > {token}", input_size=32).features[1]
    assert isinstance(pool, cls) and pool.kernel_size in (k, (k, k)) and pool.stride in (s, (s, s))


def test_gap_bn_dropout_lrn_and_flatten():
    model = build_from_notation("conv3-8 > bn > relu > lrn > gap > dropout > fc16 > bn > elu > dropout.3 > fc5",
                                input_size=32)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "LocalResponseNorm", "AdaptiveAvgPool2d", "Dropout"]
    assert [type(m).__name__ for m in model.classifier] == ["Flatten", "Linear", "BatchNorm1d", "ELU", "Dropout",
                                                            "Linear"]
    assert model.features[5].p == 0.5 and model.classifier[4].p == 0.3 and model.classifier[1].in_features == 8
    explicit = build_from_notation("conv3-4 > flatten > fc10", input_size=8)
    assert [type(m).__name__ for m in explicit.classifier] == ["Flatten", "Linear"]


def test_final_fc_and_num_classes():
    # No final fc: Flatten + fc(num_classes) appended (10 by default).
    assert build_from_notation("conv3-4 > relu", input_size=8).classifier[-1].out_features == 10
    appended = build_from_notation("conv3-4 > relu > gap", num_classes=7, input_size=32)
    assert [type(m).__name__ for m in appended.classifier] == ["Flatten", "Linear"] and appended.num_classes == 7
    # Final fc of another width: an explicit num_classes overrides it, otherwise it sets num_classes.
    assert build_from_notation(CONV6, in_channels=1, input_size=28).num_classes == 10
    resized = build_from_notation(CONV6, num_classes=3, in_channels=1, input_size=28)
    assert resized.num_classes == 3 and resized.classifier[-1].out_features == 3
    assert resized.classifier[-1].in_features == 100
    # An fc followed by an activation is not a classifier: one is appended.
    assert _layer_counts(build_from_notation("fc20 > relu", input_size=4))[-1] == 20 * 10 + 10


def test_pure_fc_network_is_lenet300():
    model = _mnist("fc300 > tanh > fc100 > tanh > fc10")
    assert sum(p.numel() for p in model.parameters()) == 266_610 and len(model.features) == 0


def test_convnet_interface():
    model = _mnist(CONV6_16)
    x = torch.zeros(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, 16, 7, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 100)
    assert model.classifier_name == "classifier.3" and model.stage_names == ("stem", "stage1", "head")
    assert [st.paths for _, st in model.stages()] == [("features.0", "features.1", "features.2"),
                                                       ("features.3", "features.4", "features.5"), ("classifier",)]
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    assert "conv5-6p2 > relu > maxpool2" in repr(model)


def test_case_whitespace_newlines_and_activation_table():
    model = build_from_notation("CONV3-4 >  Leaky-ReLU\n PReLU , Sigmoid > Softplus > Identity > Tanh > FC10",
                                input_size=32)
    names = [type(m).__name__ for m in model.features]
    assert names == ["Conv2d", "LeakyReLU", "PReLU", "Sigmoid", "Softplus", "Identity", "Tanh"]
    assert [t.kind for t in parse("conv3-4, relu, fc10")] == ["conv", "act", "fc"]
    assert [t.text for t in parse("conv3-4\n> relu >\n fc10,\n\n  bn")] == ["conv3-4", "relu", "fc10", "bn"]


@pytest.mark.parametrize("spec,pos,bad,why", [
    ("conv5-6q2 > relu", 1, "conv5-6q2", "only s<stride> and p<padding> may follow, got 'q2'"),
    ("conv5-6 > relu > swish > fc10", 3, "swish", "expected conv<k>-<n>"),
    ("conv3-4 > > fc10", 2, "", "empty token"),
    ("conv3-4 > softmax > fc10", 2, "softmax", "softmax may only be the last token"),
    ("fc10 > conv3-4", 2, "conv3-4", "cannot follow the flatten/fc part"),
    ("conv4-8 > relu", 1, "conv4-8", "even kernel (4) has no symmetric 'same' padding"),
    ("conv3-8 > dropout1.5", 2, "dropout1.5", "must be in [0, 1)"),
    ("conv3-8s2s2", 1, "conv3-8s2s2", "'s' given twice"),
    ("maxpoolpsame", 1, "maxpoolpsame", "pooling padding must be a number"),
    ("maxpool2s0", 1, "maxpool2s0", "pooling kernel and stride must be at least 1"),
    ("conv3-8 > maxpool0", 2, "maxpool0", "pooling kernel and stride must be at least 1"),
    ("conv3-8s0", 1, "conv3-8s0", "stride must be at least 1"),
    ("dwconv4 > relu", 1, "dwconv4", "even kernel (4) has no symmetric 'same' padding"),
    ("dwconv3q1", 1, "dwconv3q1", "after 'dwconv3' only s<stride> and p<padding> may follow"),
    ("dwconv3-0", 1, "dwconv3-0", "filter count must be at least 1"),
    ("conv3-6 > dwconv3-8", 2, "dwconv3-8", "must be a multiple of its 6 input channels"),
    ("fc10 > dwconv3", 2, "dwconv3", "a dwconv layer cannot follow the flatten/fc part"),
])
def test_malformed_notation_points_at_the_bad_token(spec, pos, bad, why):
    with pytest.raises(NotationError) as exc:
        cnnlab.build_model(spec, input_size=32)
    msg = str(exc.value)
    assert msg.startswith(f"notation: bad token {bad!r} at position {pos}: ") and why in msg
    assert "\n" not in msg and isinstance(exc.value, ConfigError)


def test_geometry_checked_before_any_forward():
    spec = "conv5-6p0 > maxpool2 > conv5-16p0 > maxpool2 > fc10"
    with pytest.raises(GeometryError) as exc:
        build_from_notation(spec, in_channels=1, input_size=12)
    msg = str(exc.value)
    assert msg.startswith("notation for 1x12x12 inputs: 'conv5-16p0' at position 3 (features.2) (Conv2d)")
    assert "kernel 5, stride 1, padding 0 on input size 4" in msg and "(W - F + 2P)/S + 1" in msg
    assert build_from_notation(spec, in_channels=1, input_size=32).classifier[1].in_features == 16 * 5 * 5


def test_options():
    with pytest.raises(ConfigError, match="no option 'width'"):
        cnnlab.build_model(CONV6, input_size=28, width=2)
    with pytest.raises(ConfigError, match="unknown init"):
        cnnlab.build_model(CONV6, input_size=28, init="he")
    with pytest.raises(ConfigError, match="must be positive"):
        build_from_notation(CONV6, num_classes=0, input_size=28)
    # fc1000 on 3x16x16 inputs: fan_in 768, fan_out 1000, so the schemes' standard deviations differ.
    def std(spec, init):
        torch.manual_seed(0)
        return build_from_notation(spec, input_size=16, init=init).classifier[1].weight.std().item()

    assert abs(std("fc1000 > tanh", "auto") - (2 / (768 + 1000)) ** 0.5) < 0.002      # Xavier (tanh)
    assert abs(std("fc1000 > relu", "auto") - (2 / 1000) ** 0.5) < 0.002             # He, fan_out (ReLU)
    assert abs(std("fc1000 > relu", "xavier") - (2 / (768 + 1000)) ** 0.5) < 0.002    # explicit wins
