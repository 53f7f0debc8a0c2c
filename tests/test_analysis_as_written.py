"""`summary` and `compare` count what was written: a bare layer stack gets no classifier, the lecture's FLOPs
exercise totals its 117,600, the depthwise pair's headline parameter ratio is the real one, the table shows
exact integers, and standard networks' floored strides take one line. The lecture's exercise goes through a
real `cnnlab` process; the rest calls the same entry point in-process (one interpreter start saved each)."""

import json
import subprocess
import sys

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import ConfigError


def cnnlab_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", *argv], capture_output=True, text=True, timeout=120)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_lecture_flops_exercise_is_117600(capsys):
    # Lecture 003, "Try this": one 5x5 filter on 3x32x32 -> 1x28x28. FLOPs = [(D1 F^2) + (D1 F^2 - 1) + 1]
    # x D2 x H2 x W2 = (2 * 3 * 25) * 1 * 28 * 28, computed here from the lecture's formula.
    lecture = ((3 * 5 * 5) + (3 * 5 * 5 - 1) + 1) * 1 * 28 * 28
    assert lecture == 117_600
    proc = cnnlab_cli("summary", "conv5-1p0", "--input", "3x32x32")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "features.0" in line)
    assert "117,600" in row and "58,800" in row and "118K" not in row  # exact integers in the table
    assert "FLOPs: 117,600 " in proc.stdout and "Linear" not in proc.stdout
    _, out, _ = run(capsys, "summary", "conv5-1p0", "--input", "3x32x32", "--format", "json")
    doc = json.loads(out)
    assert doc["totals"]["flops"] == lecture
    assert [r["type"] for r in doc["layers"]] == ["Conv2d"]  # no Flatten + Linear the user never wrote
    assert doc["totals"]["params"] == 5 * 5 * 3 + 1 and doc["totals"]["output_shape"] == [1, 1, 28, 28]


def test_depthwise_headline_parameter_ratio_is_the_real_one(capsys):
    _, out, _ = run(capsys, "compare", "conv3-128", "dwconv3 > conv1-128", "--input", "64x56x56", "--format", "json")
    rows = json.loads(out)["rows"]
    # By hand: standard 64*9*128 + 128 = 73,856; depthwise 64*9 + 64 = 640 plus pointwise 64*128 + 128.
    assert (rows["params"]["a"], rows["params"]["b"]) == (73_856, 640 + 8_320)
    assert rows["params"]["ratio"] == pytest.approx(8_960 / 73_856)
    assert abs(rows["params"]["ratio"] - (1 / 128 + 1 / 9)) < 0.005  # the lectures' 1/D_out + 1/F^2 = 0.1189
    assert rows["macs"]["ratio"] == pytest.approx(1 / 128 + 1 / 9, abs=1e-12)
    _, table, _ = run(capsys, "compare", "conv3-128", "dwconv3 > conv1-128", "--input", "64x56x56")
    assert "│ params           │      73,856 │      8,960 │ 0.1213 │" in table


def test_num_classes_appends_a_classifier_only_on_request(capsys):
    _, out, _ = run(capsys, "summary", "conv5-1p0", "--input", "3x32x32", "--num-classes", "10", "--format", "json")
    doc = json.loads(out)
    assert [r["type"] for r in doc["layers"]] == ["Conv2d", "Flatten", "Linear"]
    assert doc["totals"]["params"] == 76 + 784 * 10 + 10
    # A notation that ends in an fc already has its classifier: the summary is the same with or without K.
    spec = "conv5-6p0 > tanh > avgpool2 > fc10"
    for extra in ([], ["--num-classes", "10"]):
        _, out, _ = run(capsys, "summary", spec, "--input", "1x32x32", "--format", "json", *extra)
        assert json.loads(out)["totals"]["params"] == (5 * 5 + 1) * 6 + (6 * 14 * 14 + 1) * 10


def test_resnet50_floored_strides_are_one_line_with_the_fit_column(capsys):
    rc, stdout, _ = run(capsys, "summary", "resnet50")
    assert rc == 0
    geometry = [line for line in stdout.splitlines() if line.startswith("Geometry")]
    assert len(geometry) == 1 and "8 layers do not fit" in geometry[0] and "--strict" in geometry[0]
    rows = [line for line in stdout.splitlines() if line.startswith("│ ")]
    flagged = [line.split("│")[1].strip() for line in rows if line.split("│")[-2].strip() == "!"]
    # ResNet-50 at 224: the stem conv and max pool, then each stage's first stride-2 3x3 conv and shortcut.
    assert flagged == ["conv1", "maxpool", "layer2.0.conv2", "layer2.0.downsample.0", "layer3.0.conv2",
                       "layer3.0.downsample.0", "layer4.0.conv2", "layer4.0.downsample.0"]


def test_notation_needs_an_input_size_in_python_as_on_the_command_line(capsys):
    table = "conv3-64, conv3-64, maxpool, FC-4096, FC-10"
    with pytest.raises(ConfigError, match=r"needs its input size: input_size=\(H, W\)"):
        cnnlab.build_model(table)
    rc, _, err = run(capsys, "summary", table)
    assert rc == 2 and "needs --input CxHxW" in err and len(err.strip().splitlines()) == 1
    with torch.device("meta"):
        net = cnnlab.build_model("conv5-1p0", input_size=32, append_classifier=False)
    assert [type(m).__name__ for m in net.features] == ["Conv2d"] and len(net.classifier) == 0
    assert net.num_classes == 0
    with pytest.raises(ConfigError, match="without a classifier"):
        net.get_classifier()
    with torch.no_grad():
        real = cnnlab.build_model("conv5-1p0 > relu", input_size=32, append_classifier=False)
        assert real(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 28, 28)  # the written stack's feature map
