"""The shared ground: registry rules, geometry arithmetic, blocks, atomic writes, CLI plumbing."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.errors import ConfigError, GeometryError
from cnnlab.layers import (ConvNormAct, DropPath, conv_output_size, init_weights, make_activation,
                           sequential_output_shape)
from cnnlab.models.registry import register_model
from cnnlab.utils.io import atomic_path, write_json_atomic


def test_register_model_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        @register_model("lenet", "a second lenet5")
        def lenet5(num_classes=10, in_channels=1, input_size=(32, 32)):  # noqa: F811
            return nn.Identity()


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="unknown model 'lenet6'.*known: .*lenet5"):
        cnnlab.build_model("lenet6")


def test_unknown_builder_option_is_named():
    with pytest.raises(ConfigError, match="no option 'widht'"):
        cnnlab.build_model("lenet5", widht=2)


@pytest.mark.parametrize("size,k,s,p,expected", [
    (32, 5, 1, 0, 28),      # LeNet C1
    (227, 11, 4, 0, 55),    # AlexNet conv1: (227 - 11)/4 + 1
    (7, 3, 2, 1, 4),        # CS231n demo: 7x7 padded input, stride 2 -> 3 outputs on the 5x5+pad
    (224, 7, 2, 3, 112),    # ResNet stem
])
def test_conv_output_size_matches_lecture_formula(size, k, s, p, expected):
    assert conv_output_size(size, k, s, p) == expected
    conv = nn.Conv2d(1, 1, k, s, p)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == expected


def test_geometry_error_names_layer_and_formula():
    with pytest.raises(GeometryError) as exc:
        cnnlab.build_model("lenet5", input_size=(8, 8))
    msg = str(exc.value)
    assert "Conv2d" in msg and "kernel 5" in msg and "stride 1" in msg and "padding 0" in msg
    assert "(W - F + 2P)/S + 1" in msg and "\n" not in msg


def test_sequential_output_shape_agrees_with_forward():
    stack = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(8, 4, 5, dilation=2, padding=3), nn.AvgPool2d(2))
    for size in (33, 40, 64):
        assert sequential_output_shape(stack, (3, size, size)) == tuple(stack(torch.zeros(1, 3, size, size)).shape[1:])


@pytest.mark.parametrize("order", ["conv-bn-act", "conv-act-bn", "conv-act"])
def test_conv_norm_act_orders(order):
    block = ConvNormAct(3, 8, 3, act="relu", order=order)
    names = [n for n, _ in block.named_children()]
    assert names == order.split("-") and block.conv.padding == (1, 1)
    assert (block.conv.bias is None) == (order == "conv-bn-act")


def test_unknown_activation_lists_table():
    with pytest.raises(ConfigError, match="known: identity, sigmoid, tanh, relu"):
        make_activation("swish")


def test_drop_path_identity_in_eval_and_unbiased_in_train():
    dp = DropPath(0.5, mode="sample")
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    assert set(y[:, 0].unique().tolist()) == {0.0, 2.0}          # whole rows dropped or scaled by 1/(1-p)
    assert abs(y.mean().item() - 1.0) < 0.08                      # expectation preserved


def test_drop_path_batch_mode_drops_the_whole_batch():
    dp = DropPath(0.5).train()                                    # the paper's default: one coin per batch
    torch.manual_seed(0)
    outs = [dp(torch.ones(16, 3)) for _ in range(200)]
    assert all(set(y.unique().tolist()) in ({0.0}, {2.0}) for y in outs)
    assert 70 < sum(bool(y[0, 0] == 0) for y in outs) < 130     # ~half the batches dropped


def test_init_weights_schemes():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Linear(10, 10))
    init_weights(model, "xavier")
    assert torch.count_nonzero(model[0].bias) == 0 and torch.all(model[1].weight == 1)
    with pytest.raises(ConfigError):
        init_weights(model, "lecun")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "summary" in out.stdout
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"cnnlab {cnnlab.__version__}"


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (5, 3, 2)])
def test_ceil_mode_pool_size_agrees_with_pytorch(kernel, stride, padding):
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=True)
    for size in range(1, 40):
        try:
            torch_out = pool(torch.zeros(1, 1, size, size)).shape[-1]
        except RuntimeError:
            torch_out = None
        try:
            ours = conv_output_size(size, kernel, stride, padding, ceil_mode=True)
        except GeometryError:
            ours = None
        assert ours == torch_out, size


def test_atomic_write_uses_ordinary_file_mode(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_help_and_import_do_not_load_torch():
    """`cnnlab --help` and `import cnnlab` stay fast: torch (about a second) loads on first real use."""
    code = ("import sys, cnnlab, cnnlab.cli; cnnlab.cli.build_parser(); loaded = 'torch' in sys.modules; "
            "cnnlab.build_model; print(loaded, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("name,option,value,expects", [
    ("vgg16", "dropout", "abc", "a number"), ("resnet18", "zero_init_residual", 1, "true or false"),
    ("lenet5", "act", 7, "a name"), ("resnet18", "drop_path_rate", True, "a number")])
def test_model_option_of_the_wrong_kind_is_one_line_error(name, option, value, expects):
    with pytest.raises(ConfigError, match=f"option {option} expects {expects}"):
        cnnlab.build_model(name, **{option: value})
    assert cnnlab.build_model("lenet5", act="relu") is not None  # right kinds still build
