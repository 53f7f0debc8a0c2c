"""The lectures' and papers' spellings of the zoo's models resolve, case-insensitively, to the right model:
each is checked by its parameter count against the outside references in param_counts.py (torchvision's
and the papers' counts), not against the alias table."""

import json
import subprocess
import sys

import pytest
import torch
from param_counts import EXPECTED_PARAMS

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.models import model_info
from cnnlab.models.registry import is_notation

# (what a user types, the model it means). The VGG letters are the paper's Table 1 columns: A = 11 weight
# layers, A-LRN, B = 13, C = 16 with 1x1 convs, D = 16, E = 19.
SPELLINGS = [
    ("LeNet-5", "lenet5"), ("lenet-5", "lenet5"), ("LENET5", "lenet5"), ("LeNet-1", "lenet1"),
    ("LeNet300", "lenet300"), ("LeNet-300", "lenet300"), ("LeNet-300-100", "lenet300_100"),
    ("AlexNet", "alexnet"), ("ALEXNET", "alexnet"),
    ("VGG-11", "vgg11"), ("VGG-A", "vgg11"), ("vgg-a-lrn", "vgg11_lrn"), ("VGG-13", "vgg13"), ("VGG-B", "vgg13"),
    ("VGG-C", "vgg16_c"), ("vgg-c", "vgg16_c"), ("VGG-16", "vgg16"), ("vgg-d", "vgg16"), ("VGG-D", "vgg16"),
    ("VGG-19", "vgg19"), ("VGG-E", "vgg19"),
    ("VGG-11-BN", "vgg11_bn"), ("VGG-A-BN", "vgg11_bn"), ("vgg13_bn", "vgg13_bn"), ("VGG-B-BN", "vgg13_bn"),
    ("VGG-C-BN", "vgg16_c_bn"), ("VGG-16-BN", "vgg16_bn"), ("vgg16_bn", "vgg16_bn"), ("VGG-D-BN", "vgg16_bn"),
    ("VGG16-BN", "vgg16_bn"), ("VGG-19-BN", "vgg19_bn"), ("vgg-e-bn", "vgg19_bn"),
    ("GoogLeNet", "googlenet"), ("googLeNet", "googlenet"), ("Inception-v1", "googlenet"),
    ("ResNet-18", "resnet18"), ("ResNet-34", "resnet34"), ("ResNet-50", "resnet50"), ("resnet-101", "resnet101"),
    ("ResNet-152", "resnet152"), ("ResNet 50", "resnet50"), ("Plain-18", "plain18"), ("plain-34", "plain34"),
    ("MobileNet", "mobilenet_v1"), ("MobileNet-v1", "mobilenet_v1"), ("MOBILENET_V1", "mobilenet_v1"),
]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spelling, name", SPELLINGS)
def test_spelling_builds_the_model_it_names(spelling, name):
    assert not is_notation(spelling)
    info = model_info(spelling)
    assert info.name == name
    with torch.device("meta"):
        model = cnnlab.build_model(spelling)
    assert n_params(model) == EXPECTED_PARAMS[name]


def test_registered_names_win_and_unknown_spellings_still_fail():
    assert model_info("vgg16_c").name == "vgg16_c" and model_info("vgg16").name == "vgg16"
    with pytest.raises(ConfigError, match="unknown model 'VGG-F'"):
        cnnlab.build_model("VGG-F")
    with pytest.raises(ConfigError, match=r"unknown model 'ResNet-19' \(did you mean resnet18"):
        cnnlab.build_model("ResNet-19")


def test_cli_accepts_spellings_and_models_lists_them(capsys):
    out = subprocess.run([sys.executable, "-m", "cnnlab", "summary", "VGG-D", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"]["params"] == EXPECTED_PARAMS["vgg16"]
    assert main(["models", "--family", "vgg", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["vgg16"]["aliases"] == ["VGG-16", "VGG-D"] and rows["vgg16_c_bn"]["aliases"][-1] == "VGG-C-BN"
