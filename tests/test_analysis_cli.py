"""`cnnlab summary|compare|conv`: outputs, the lectures' worked convolution examples, one-line errors."""

import json

import numpy as np
import pytest

from cnnlab.cli import main

X_IMAGE = "1 1 1 0 0; 0 1 1 1 0; 0 0 1 1 1; 0 0 1 1 0; 0 1 1 0 0"  # lecture 001, 5x5 binary crop


def run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # options checked by argparse when parsed exit(2) with their one-line error
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def maps(out):
    """The matrices printed after each 'output map n:' header."""
    blocks = out.split("output map ")[1:]
    return [[[float(v) for v in line.split()] for line in b.split(":\n", 1)[1].strip().split("\n\n")[0]
             .splitlines() if line and not line.startswith("  o") and not line.startswith("max")]
            for b in blocks]


def test_summary_json_and_other_formats(capsys):
    rc, out, _ = run(capsys, "summary", "lenet5", "--input", "1x32x32", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["schema_version"] == 1 and doc["totals"]["params"] == 61_706
    rc, out, _ = run(capsys, "summary", "lenet5", "--format", "csv")
    assert rc == 0 and out.splitlines()[0].startswith("name,type,kernel") and len(out.splitlines()) == 13
    rc, out, _ = run(capsys, "summary", "lenet5", "--format", "markdown")
    assert rc == 0 and out.startswith("### ") and "| layer |" in out
    rc, out, _ = run(capsys, "summary", "alexnet")
    assert rc == 0 and "62,378,344" in out and "Linear 94.0%" in out and "Conventions:" in out


def test_summary_of_notation_and_strict(capsys):
    rc, out, _ = run(capsys, "summary", "conv5-6p0 > tanh > avgpool2 > fc10", "--input", "1x32x32",
                     "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and [r["output_shape"] for r in doc["layers"][:3]] == [[1, 6, 28, 28]] * 2 + [[1, 6, 14, 14]]
    assert doc["totals"]["params"] == (5 * 5 + 1) * 6 + (6 * 14 * 14 + 1) * 10
    rc, out, _ = run(capsys, "summary", "conv3-4s3p0", "--input", "1x7x7")
    assert rc == 0 and "does not fit" in out and "2.33" in out  # (7 - 3)/3 + 1
    rc, out, err = run(capsys, "summary", "conv3-4s3p0", "--input", "1x7x7", "--strict")
    assert rc == 2 and out == "" and "--strict" in err and "2.33" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["summary", "resnet18", "--input", "3x224"], "CxHxW"),
    (["summary", "resnet1800", "--input", "3x224x224"], "unknown model"),
    (["summary", "lenet5", "--input", "1x4x4"], "too small"),
    (["compare", "lenet5"], "exactly two"),
    (["conv", "--input", "1 2; 3", "--kernel", "1"], "every row"),
    (["conv", "--input", "1 2; 3 4", "--kernel", "1 1 1; 1 1 1; 1 1 1"], "too small"),
    (["conv", "--input", "1 2; 3 4", "--kernel", "1", "--pool", "max", "--pool-size", "0"], "--pool-size"),
    (["compare", "lenet5", "lenet1", "--demo", "depthwise"], "not both"),
])
def test_errors_are_one_line_exit_2(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_summary_of_saved_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model": "lenet5", "num_classes": 7, "in_channels": 1,
                                                      "image_size": 32}))
    rc, out, _ = run(capsys, "summary", str(tmp_path), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["totals"]["output_shape"] == [1, 7] and doc["input_size"] == [1, 32, 32]
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 3}))
    rc, _, err = run(capsys, "summary", str(tmp_path))
    assert rc == 2 and "config.json" in err and len(err.strip().splitlines()) == 1


def test_compare_depthwise_demo_shows_lecture_ratio(capsys):
    rc, out, _ = run(capsys, "compare", "--demo", "depthwise", "--input", "32x28x28", "--out-channels", "64",
                     "--format", "json")
    doc = json.loads(out)
    assert rc == 0
    assert doc["rows"]["flops"]["ratio"] == pytest.approx(1 / 64 + 1 / 9, abs=1e-12)
    sep = doc["separable"]
    assert (sep["d_in"], sep["d_out"], sep["kernel"]) == (32, 64, 3)
    assert sep["predicted_fraction"] == "73/576"  # 1/64 + 1/9 = (9 + 64)/576
    assert sep["conv_params"]["b"] == 32 * 9 + 32 * 64 and sep["conv_params"]["a"] == 32 * 9 * 64
    rc, out, _ = run(capsys, "compare", "--demo", "depthwise")  # defaults: 64x56x56, D_out 128, F 3
    assert rc == 0 and "1/128 + 1/9 = 0.1189" in out and "= 0.1189" in out.split("conv MACs")[1]


def test_compare_notation_standard_vs_separable(capsys):
    rc, out, _ = run(capsys, "compare", "conv3-128", "dwconv3 > conv1-128", "--input", "64x56x56",
                     "--format", "json")
    assert rc == 0
    sep = json.loads(out)["separable"]
    # Hand count on 64x56x56, "same" padding: standard 64*9*128*56*56; separable 64*9*56*56 + 64*128*56*56.
    assert sep["conv_macs"]["a"] == 231_211_008 and sep["conv_macs"]["b"] == 1_806_336 + 25_690_112
    assert sep["conv_macs"]["ratio"] == pytest.approx(1 / 128 + 1 / 9, abs=1e-12)
    assert sep["predicted_ratio"] == pytest.approx(1 / 128 + 1 / 9, abs=1e-12)
    # With biases: (64*9*128 + 128) vs (64*9 + 64) + (64*128 + 128): near, not equal, to the formula.
    assert (sep["conv_params"]["a"], sep["conv_params"]["b"]) == (73_856, 640 + 8_320)
    rc, out, _ = run(capsys, "compare", "conv3-128", "dwconv3 > conv1-128", "--input", "64x56x56")
    assert rc == 0 and "conv MACs   B/A = 27,496,448 / 231,211,008 = 0.1189" in out
    assert "lectures' 1/D_out + 1/F^2 = 1/128 + 1/9 = 0.1189" in out and "biases make it differ" in out


def test_compare_unrelated_models_has_no_prediction(capsys):
    rc, out, _ = run(capsys, "compare", "lenet5", "lenet1", "--input", "1x32x32", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["separable"] is None
    assert doc["rows"]["params"]["ratio"] == pytest.approx(doc["rows"]["params"]["b"] / 61_706)
    rc, out, _ = run(capsys, "compare", "conv3-128", "dwconv5 > conv1-128", "--input", "64x28x28")
    assert rc == 0 and "B / A" in out and "Depthwise-separable" not in out  # 5x5 vs 3x3: not a pair


def test_conv_x_filter_lecture_001(capsys):
    rc, out, _ = run(capsys, "conv", "--input", X_IMAGE, "--kernel", "1 0 1; 0 1 0; 1 0 1", "--steps")
    assert rc == 0 and maps(out)[0] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert "o0[0,0] = 1*1 + 1*0 + 1*1 + 0*0 + 1*1 + 1*0 + 0*1 + 0*0 + 1*1 = 4" in out


def test_conv_cartesian_axes_exercise_lecture_004(capsys):
    vertical = "-1/2 1 -1/2; -1/2 1 -1/2; -1/2 1 -1/2"
    rc, out, _ = run(capsys, "conv", "--input", "0 1 0 1; 0 1 0 1; 1 1 1 1; 0 -2 0 -2", "--kernel", vertical,
                     "--kernel", "-1/2 -1/2 -1/2; 1 1 1; -1/2 -1/2 -1/2", "--pool", "max")
    assert rc == 0 and maps(out)[0] == [[2, -2], [-1, 1]]  # the slides' worked answer
    # The horizontal filter (the slides leave it to the reader), by hand: top-left window
    # -1/2*(0+1+0) + (0+1+0) - 1/2*(1+1+1) = -1; bottom-right -1/2*(1+0+1) + 3 - 1/2*(-2+0-2) = 4.
    assert maps(out)[1] == [[-1, -0.5], [3.5, 4]]
    assert "max pool 2 of map 0:\n2\n" in out and "max pool 2 of map 1:\n4\n" in out


# CS231n filter-bank demo (lecture 004): 7x7x3 padded input (5x5x3 + pad 1), two 3x3x3 filters, stride 2.
X0 = "1 1 2 0 2; 1 2 2 1 2; 2 2 0 1 2; 0 2 2 0 2; 1 2 2 1 2"
X1 = "0 0 2 0 2; 1 2 2 2 0; 2 2 1 2 0; 2 2 0 1 2; 0 0 2 2 1"
X2 = "1 0 2 2 1; 2 2 2 0 1; 0 0 0 2 2; 0 0 2 1 2; 2 1 1 1 2"
# The seed's text of w0[:,:,2] reads "1 -1 0; -1 1 1; 1 -1 1"; its middle entry lost a minus sign in
# extraction: -1 there is the only single-entry reading that reproduces all nine o[:,:,0] values shown.
W0 = "-1 1 -1; -1 -1 -1; 1 -1 0 | -1 -1 0; -1 0 1; 0 1 1 | 1 -1 0; -1 -1 1; 1 -1 1"
W1 = "-1 1 0; -1 1 0; 1 1 -1 | 1 1 1; 1 0 -1; -1 0 -1 | 1 0 -1; 1 -1 1; -1 -1 1"


def test_conv_cs231n_filter_bank_demo(capsys):
    rc, out, _ = run(capsys, "conv", "--input", f"{X0} | {X1} | {X2}", "--kernel", W0, "--kernel", W1,
                     "--bias", "1", "0", "--stride", "2", "--padding", "1")
    assert rc == 0
    o0, o1 = maps(out)
    assert o0 == [[0, 2, -6], [-1, -5, -11], [-7, -7, -9]]
    assert o1 == [[-3, -4, 3], [-2, 8, 4], [4, 1, 8]]
    assert "= 56)" in out  # (3*3*3 + 1)*2 parameters, as the slide says


def test_conv_true_convolution_flips_and_files(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.arange(9.0).reshape(3, 3))
    (tmp_path / "k.json").write_text(json.dumps([[1, 2], [3, 4]]))
    rc, out, _ = run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", str(tmp_path / "k.json"))
    assert maps(out)[0] == [[0 + 2 + 9 + 16, 1 * 1 + 2 * 2 + 4 * 3 + 5 * 4], [3 + 8 + 18 + 28, 4 + 10 + 21 + 32]]
    rc, out, _ = run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", "1 2; 3 4", "--mode",
                     "convolution")
    assert maps(out)[0][0][0] == 0 * 4 + 1 * 3 + 3 * 2 + 4 * 1  # (k*f): kernel rotated by 180 degrees
    rc, out, _ = run(capsys, "conv", "--input", "1 1 1 1 1 1 1; " * 6 + "1 1 1 1 1 1 1", "--kernel",
                     "1 1 1; 1 1 1; 1 1 1", "--stride", "3")
    assert rc == 0 and "2.33" in out  # (7 - 3)/3 + 1: "does not fit"


def test_summary_of_a_missing_run_directory_says_so(capsys):
    from cnnlab.cli import main

    assert main(["summary", "runs/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs/does-not-exist: no such run directory" in err
