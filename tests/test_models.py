"""The model zoo: every registered model's parameter count at its canonical input, output shapes at the
canonical and a small input, the lectures' per-layer AlexNet counts, torchvision-compatible VGG state
dicts, geometry errors before any forward, the ConvNet interface and `cnnlab models`."""

import json
import math

import pytest
import torch
from param_counts import EXPECTED_PARAMS
from torch import nn

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import ConfigError, GeometryError
from cnnlab.layers import resolve_init
from cnnlab.models import list_models, model_info

# The lectures' AlexNet table (003): conv1..conv5, fc6..fc8.
ALEXNET_LAYERS = [34_944, 614_656, 885_120, 1_327_488, 884_992, 37_752_832, 16_781_312, 4_097_000]

NAMES = [m.name for m in list_models()]
BIG = 20_000_000  # above this, canonical-size forwards run on the meta device (shapes only)




def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(name: str, device: str = "cpu", **kw) -> nn.Module:
    with torch.device(device):
        return cnnlab.build_model(name, **kw).eval()


def _small_size(name: str) -> int | None:
    """The smallest of a few sizes the architecture accepts (geometry is checked at build)."""
    for size in (32, 64, 67, 96, 128):
        try:
            _build(name, "meta", input_size=size)
            return size
        except GeometryError:
            continue
    return None


def test_every_registered_model_has_an_expected_count():
    missing = [n for n in NAMES if n not in EXPECTED_PARAMS]
    assert not missing, f"add EXPECTED_PARAMS entries for {missing}"
    assert not [n for n in EXPECTED_PARAMS if n not in NAMES], "EXPECTED_PARAMS names an unregistered model"


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_canonical_input(name):
    assert model_info(name).num_params() == EXPECTED_PARAMS[name]
    if EXPECTED_PARAMS[name] < BIG:  # the meta-device count equals a real build's
        assert _count(cnnlab.build_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_at_canonical_input(name):
    info = model_info(name)
    device = "meta" if EXPECTED_PARAMS.get(name, BIG) >= BIG else "cpu"
    model = _build(name, device)
    with torch.no_grad():
        out = model(torch.zeros(1, *info.canonical_input, device=device))
    assert tuple(out.shape) == (1, info.num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_at_small_input(name):
    size = _small_size(name)
    if size is None:
        pytest.skip(f"{name} needs inputs above 128x128")
    info = model_info(name)
    model = _build(name, input_size=size, num_classes=7)
    with torch.no_grad():
        out = model(torch.zeros(2, info.in_channels, size, size))
    assert tuple(out.shape) == (2, 7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_real_forward_at_canonical_input(name):
    info = model_info(name)
    model = _build(name)
    with torch.no_grad():
        out = model(torch.randn(1, *info.canonical_input))
    assert out.shape == (1, info.num_classes) and torch.isfinite(out).all()


def test_alexnet_matches_the_lectures_per_layer_table():
    model = _build("alexnet", "meta")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [_count(m) for m in layers] == ALEXNET_LAYERS
    assert sum(ALEXNET_LAYERS[:5]) == 3_747_200 and sum(ALEXNET_LAYERS[5:]) == 58_631_144
    assert layers[5].in_features == 256 * 6 * 6   # conv5's 6x6x256 output, flattened
    lrn = _build("alexnet", "meta", lrn=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in lrn.modules()) == 2
    assert _count(lrn) == 62_378_344


def test_alexnet_dropout_precedes_the_first_two_fc_layers():
    cls = _build("alexnet", "meta").classifier
    assert [type(m).__name__ for m in cls] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]


def test_lenet_options_act_pool_order_init():
    net = _build("lenet5", act="relu", pool="max", order="conv-pool-act")
    kinds = [type(m).__name__ for m in net.features]
    assert kinds[:3] == ["Conv2d", "MaxPool2d", "ReLU"] and _count(net) == 61_706
    assert resolve_init("auto", "relu") == "kaiming" and resolve_init("auto", "tanh") == "xavier"
    with pytest.raises(ConfigError, match="unknown pooling 'median'"):
        cnnlab.build_model("lenet5", pool="median")
    with pytest.raises(ConfigError, match="unknown init 'he'"):
        cnnlab.build_model("lenet5", init="he")


def test_lenet_options_are_listed_per_builder():
    assert list(model_info("lenet5").options) == ["act", "pool", "order", "init"]
    assert model_info("lenet1").options == {"act": "tanh", "pool": "avg", "order": "conv-act-pool", "init": "auto"}
    assert model_info("lenet300").options == {"act": "tanh", "init": "auto"}
    with pytest.raises(ConfigError, match=r"model 'lenet300' has no option 'pool'; its options: act='tanh'"):
        cnnlab.build_model("lenet300", pool="max")
    with pytest.raises(ConfigError, match="unknown order 'pool-conv'"):
        cnnlab.build_model("lenet1", order="pool-conv")


@pytest.mark.parametrize("name,act,std", [
    # LeNet300's first layer, 784 -> 300: Xavier (tanh) std sqrt(2/(784+300)), He fan_out sqrt(2/300).
    ("lenet300", "tanh", (2 / (784 + 300)) ** 0.5),
    ("lenet300", "relu", (2 / 300) ** 0.5),
])
def test_lenet_auto_init_follows_the_activation(name, act, std):
    torch.manual_seed(0)
    weight = cnnlab.build_model(name, act=act).classifier[1].weight
    assert weight.std().item() == pytest.approx(std, rel=0.03)
    assert torch.count_nonzero(cnnlab.build_model(name, act=act).classifier[1].bias) == 0


def test_alexnet_and_vgg_use_he_init():
    torch.manual_seed(0)
    conv = _build("vgg11", input_size=32, num_classes=10).features[3]     # 64 -> 128, 3x3: fan_out 1152
    assert conv.weight.std().item() == pytest.approx((2 / 1152) ** 0.5, rel=0.03)
    conv1 = _build("alexnet", input_size=67, num_classes=10).features[0]   # 96 @ 11x11: fan_out 11,616
    assert conv1.weight.std().item() == pytest.approx((2 / 11_616) ** 0.5, rel=0.03)


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "resnet18"])
def test_non_positive_sizes_are_one_line_errors(name):
    # Without the check an FC LeNet on 0x0 inputs would build a Linear(0, 300) that never trains.
    with pytest.raises(GeometryError, match=rf"model '{name}': input size \(0, 32\) must be positive"):
        cnnlab.build_model(name, input_size=(0, 32))
    with pytest.raises(ConfigError, match=f"model '{name}': num_classes and in_channels must be positive"):
        cnnlab.build_model(name, in_channels=0)


def test_lenet5_geometry_error_before_forward():
    with pytest.raises(GeometryError) as exc:
        cnnlab.build_model("lenet5", input_size=(8, 8))
    msg = str(exc.value)
    assert msg.startswith("LeNet-5 for 1x8x8 inputs: features.3 (Conv2d)")
    assert "kernel 5, stride 1, padding 0 on input size 2" in msg
    assert "(W - F + 2P)/S + 1 = (2 - 5 + 2*0)/1 + 1" in msg and "\n" not in msg


def test_vgg_geometry_error_names_the_pool():
    with pytest.raises(GeometryError, match=r"VGG config D for 3x16x16 inputs: features\.30 \(MaxPool2d\)"):
        cnnlab.build_model("vgg16", input_size=16)


# The conv indices in `features` of every torchvision VGG (the keys of its published ImageNet weights).
TV_VGG_CONVS = {
    "vgg11": [0, 3, 6, 8, 11, 13, 16, 18],
    "vgg13": [0, 2, 5, 7, 10, 12, 15, 17, 20, 22],
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
    "vgg11_bn": [0, 4, 8, 11, 15, 18, 22, 25],
    "vgg13_bn": [0, 3, 7, 10, 14, 17, 21, 24, 28, 31],
    "vgg16_bn": [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40],
    "vgg19_bn": [0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49],
}


@pytest.mark.parametrize("name", sorted(TV_VGG_CONVS))
def test_every_torchvision_vgg_has_its_state_dict_names(name):
    sd = _build(name, "meta").state_dict()
    bn = name.endswith("_bn")
    params = ("weight", "bias")
    expected = []
    for i in TV_VGG_CONVS[name]:
        expected += [f"features.{i}.{p}" for p in params]
        if bn:
            expected += [f"features.{i + 1}.{p}" for p in (*params, "running_mean", "running_var",
                                                               "num_batches_tracked")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in params]
    assert list(sd) == expected
    assert sd["classifier.0.weight"].shape == (4096, 512 * 7 * 7)


def test_vgg_counts_round_to_the_papers_millions():
    # Simonyan & Zisserman, Table 2: A, A-LRN 133; B 133; C 134; D 138; E 144 million.
    paper = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}
    assert {n: round(EXPECTED_PARAMS[n] / 1e6) for n in paper} == paper


def test_vgg_state_dict_shapes_match_torchvision():
    sd = _build("vgg16", "meta").state_dict()
    assert sd["features.0.weight"].shape == (64, 3, 3, 3) and sd["features.28.weight"].shape == (512, 512, 3, 3)
    bn = _build("vgg16_bn", "meta").state_dict()
    assert bn["features.1.running_mean"].shape == (64,) and bn["features.41.weight"].shape == (512,)
    assert list(_build("vgg16_c", "meta").state_dict()["features.14.weight"].shape) == [256, 256, 1, 1]


def test_vgg_head_is_sized_from_geometry():
    net = _build("vgg16", input_size=(32, 32), num_classes=10)
    assert isinstance(net.avgpool, nn.Identity) and net.classifier[0].in_features == 512
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    adaptive = _build("vgg16", "meta", input_size=(32, 32), adaptive_pool=True)
    assert adaptive.classifier[0].in_features == 512 * 7 * 7   # torchvision's behaviour, on request


def test_vgg_block_order_and_lrn():
    net = _build("vgg11_bn", "meta", order="conv-act-bn")
    assert [type(m).__name__ for m in net.features[:3]] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert _count(net) == EXPECTED_PARAMS["vgg11_bn"]
    lrn = _build("vgg11_lrn", "meta")
    assert isinstance(lrn.features[2], nn.LocalResponseNorm) and isinstance(lrn.features[3], nn.MaxPool2d)


@pytest.mark.parametrize("name,size,pre", [("lenet300_linear", 28, 784), ("lenet300_100", 28, 100),
                                           ("lenet1", 28, 192), ("lenet5", 32, 84), ("alexnet", 67, 4096),
                                           ("vgg11_bn", 32, 4096)])
def test_pre_logits_reset_classifier_and_stages(name, size, pre):
    net = _build(name, input_size=size)
    x = torch.zeros(2, net.in_channels, size, size)
    with torch.no_grad():
        assert net.forward_head(net.forward_features(x), pre_logits=True).shape == (2, pre)
        net.reset_classifier(5)
        assert net(x).shape == (2, 5) and net.num_classes == 5
    assert net.get_classifier().out_features == 5
    for stage, module in net.stages():
        assert isinstance(module, nn.Module), stage


def test_unknown_model_name_is_one_line():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg17' \(did you mean [^)]*vgg16") as exc:
        cnnlab.build_model("vgg17")
    assert "\n" not in str(exc.value)


def test_cli_models_table(capsys):
    assert main(["models", "--family", "vgg"]) == 0
    out = capsys.readouterr().out
    assert "vgg16_c_bn" in out and "138,357,544" in out and "lenet5" not in out


def test_cli_models_json(capsys):
    assert main(["models", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, count in EXPECTED_PARAMS.items():
        assert rows[name]["params"] == count
    assert rows["alexnet"]["input"] == [3, 227, 227] and rows["lenet5"]["family"] == "lenet"


def test_cli_models_unknown_family(capsys):
    assert main(["models", "--family", "transformers"]) == 2
    err = capsys.readouterr().err
    assert "unknown family 'transformers'" in err and "vgg" in err


@pytest.mark.parametrize("name, size", [("vgg11", 32), ("vgg11_bn", 32), ("alexnet", 67)])
def test_fc_classifiers_start_near_uniform_predictions(name, size):
    # A K-class net that starts without a preference has a first cross-entropy of ln K (2.30 for 10
    # classes); a small last FC keeps it within a factor of two. He's fan_out rule on the last FC (std
    # sqrt(2/10)) gave VGG-11-BN logits with std ~26 on these inputs and a first loss of ~40, and the
    # digits run at the default rate never left chance.
    torch.manual_seed(0)
    model = _build(name, input_size=size, num_classes=10)
    *hidden, last = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert last.weight.std().item() == pytest.approx(0.01, rel=0.05)   # torchvision VGG's N(0, 0.01)
    for fc in hidden:                                                   # He et al. 2015 eq. 10: 2 / fan_in
        assert fc.weight.std().item() == pytest.approx((2 / fc.in_features) ** 0.5, rel=0.05)
    x = torch.randn(64, 3, size, size)
    with torch.no_grad():  # train mode: BN normalises by the batch, as in the first step
        loss = torch.nn.functional.cross_entropy(model.train()(x), torch.randint(0, 10, (64,)))
    assert loss.item() < 2 * math.log(10)  # was ~40 for VGG-11-BN
