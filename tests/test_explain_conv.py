"""`cnnlab explain conv` and `cnnlab conv --demo`: every number the page embeds against PyTorch, the
filter-bank slide's correction against a brute-force search, option help and one-line errors."""

import itertools
import json
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.analysis.conv_demos import DEMOS, FILTER_BANK, as_given, correction_effects
from cnnlab.analysis.conv_explainer import conv_spec, walk
from cnnlab.cli import build_parser, main
from cnnlab.errors import ConfigError
from cnnlab.explain.conv_page import conv_page, example_data
from cnnlab.explain.page import embed_json

# The slide's printed outputs (lecture 004, "Convolution Filter Bank Demo"), typed from the seed text.
SLIDE_O0 = [[0, 2, -6], [-1, -5, -11], [-7, -7, -9]]
SLIDE_O1 = [[-3, -4, 3], [-2, 8, 4], [4, 1, 8]]


def tensor(vol) -> torch.Tensor:
    return torch.tensor([[[float(v) for v in row] for row in mat] for mat in vol], dtype=torch.float64)


def torch_maps(x, kernels, biases, stride, padding, mode="correlation"):
    w = torch.stack([tensor(k) for k in kernels])
    if mode == "convolution":
        w = w.flip(-1, -2)
    b = torch.tensor([float(v) for v in biases], dtype=torch.float64)
    return F.conv2d(tensor(x)[None], w, b, stride=stride, padding=padding)[0]


def page_data(html: str) -> dict:
    text = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(text)


def as_float(nested):
    return torch.tensor(np.array(nested, dtype=object).astype(float).tolist(), dtype=torch.float64)


def test_slide_output_reproduced_and_matches_pytorch():
    d = FILTER_BANK
    ours = walk(d.input, d.kernels, d.biases, d.stride, d.padding)
    ref = torch_maps(d.input, d.kernels, d.biases, d.stride, d.padding)
    assert torch.equal(as_float([[[float(v) for v in r] for r in m] for m in ours.maps]), ref)
    assert ref[0].tolist() == SLIDE_O0 and ref[1].tolist() == SLIDE_O1


def test_filter_bank_correction_is_the_only_single_entry_fix():
    """Search every single entry of both filters and every value -3..3 with PyTorch: exactly one change of
    the slide's verbatim filters reproduces both printed maps, and it is w0[:,:,2] centre -> -1."""
    verbatim = as_given(FILTER_BANK)
    w = torch.stack([tensor(k) for k in verbatim.kernels])
    x = tensor(FILTER_BANK.input)[None]
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    target = torch.tensor([SLIDE_O0, SLIDE_O1], dtype=torch.float64)
    assert not torch.equal(F.conv2d(x, w, b, stride=2, padding=1)[0], target)  # verbatim text is wrong
    fixes = []
    for idx in itertools.product(*(range(s) for s in w.shape)):
        for value in range(-3, 4):
            if value == w[idx]:
                continue
            trial = w.clone()
            trial[idx] = value
            if torch.equal(F.conv2d(x, trial, b, stride=2, padding=1)[0], target):
                fixes.append((idx, value))
    assert fixes == [((0, 2, 1, 1), -1)]
    (cor,) = FILTER_BANK.corrections
    assert (cor.kernel, cor.channel, cor.row, cor.col, cor.slide, cor.corrected) == (0, 2, 1, 1, 1, -1)
    (effect,) = correction_effects(FILTER_BANK)
    verbatim_map = F.conv2d(x, w, b, stride=2, padding=1)[0, 0]
    assert as_float(effect.slide_map).tolist() == verbatim_map.tolist()
    assert effect.differing == int((verbatim_map != target[0]).sum()) == 7


@pytest.mark.parametrize("name", list(DEMOS))
def test_every_embedded_configuration_matches_pytorch(name):
    """Each demo's page data: for every stride/padding it embeds, the maps equal F.conv2d's, the products
    are the window times the kernel entry by entry, and their per-channel sums add up with the bias."""
    demo = DEMOS[name]
    spec = conv_spec(demo=demo)
    data = example_data(spec, name, demo.title, demo)
    assert data["configs"], "nothing embedded"
    assert f"{demo.stride},{demo.padding}" == next(iter(data["configs"]))  # the lecture's own first
    for key, cfg in data["configs"].items():
        s, p = map(int, key.split(","))
        ref = torch_maps(demo.input, demo.kernels, demo.biases, s, p, demo.mode)
        assert torch.equal(as_float(cfg["maps"]), ref), key
        xp = F.pad(tensor(demo.input), (p, p, p, p))
        assert torch.equal(as_float(data["padded"][str(p)]), xp)
        kh, kw = len(demo.kernels[0][0]), len(demo.kernels[0][0][0])
        for n, k in enumerate(demo.kernels):
            windows = F.unfold(xp[None], (kh, kw), stride=s)[0]  # (C*kh*kw, units), PyTorch's im2col
            prods = windows * tensor(k).reshape(-1, 1)
            got = as_float(cfg["products"][n]).reshape(ref.shape[1] * ref.shape[2], -1).T
            assert torch.equal(got, prods), (key, n)
            sums = as_float(cfg["sums"][n]).reshape(-1, len(demo.input))
            assert torch.equal(sums.sum(1) + float(demo.biases[n]), ref[n].flatten())


def test_seven_by_seven_strides_as_the_lecture_says():
    data = example_data(conv_spec(demo=DEMOS["stride-7x7"]), "s", "t", DEMOS["stride-7x7"])
    sizes = {k: (c["oh"], c["fit"]["rows"]) for k, c in data["configs"].items()}
    assert sizes["1,0"][0] == 5 and sizes["2,0"][0] == 3  # "=> 5 x 5 output", "=> 3 x 3 output"
    assert sizes["3,0"][1] == {"fits": False, "exact": 2.3333, "floored": 2}  # "Does not fit!", 2.33
    assert data["configs"]["1,1"]["oh"] == 7 and data["configs"]["3,1"]["oh"] == 3  # pad 1: 7x7, and 3


def test_true_convolution_page_flips_the_kernel():
    spec = conv_spec("1 2 0; 0 1 3; 4 0 1", ["1 2; 3 4"], mode="convolution")
    data = example_data(spec, "yours", "t")
    ref = torch_maps(spec.input, spec.kernels, spec.biases, 1, 0, "convolution")
    assert torch.equal(as_float(data["configs"]["1,0"]["maps"]), ref)
    assert data["applied"] == [[[["4", "3"], ["2", "1"]]]]  # rotated 180 degrees, as shown in the page


def test_page_is_self_contained_and_lists_every_demo():
    html = conv_page(conv_spec(demo=FILTER_BANK))
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)  # nothing to fetch
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    data = page_data(html)
    assert data["schema_version"] == 1 and data["first"] == "filter-bank"
    assert [e["key"] for e in data["examples"]] == list(DEMOS)
    fb = data["examples"][0]
    assert fb["corrections"][0]["label"] == "w0[:,:,2] centre" and fb["agrees"] == [True, True]
    yours = page_data(conv_page(conv_spec("1 2; 3 4", ["1"], bias=["1/2"])))
    assert yours["first"] == "yours" and yours["examples"][0]["configs"]["1,0"]["maps"] == [[["1.5", "2.5"],
                                                                                            ["3.5", "4.5"]]]


def test_embedded_json_cannot_close_the_script_element():
    text = embed_json({"model": "conv3-8 > relu </script><script>alert(1)</script> & more"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["model"].endswith("alert(1)</script> & more")


def test_conv_demo_cli_shows_slide_values_correction_and_why(capsys):
    assert main(["conv", "--demo", "filter-bank"]) == 0
    out = capsys.readouterr().out
    assert "corrected: w0[:,:,2] centre" in out and "reads 1 in the slide's text; cnnlab uses -1" in out
    assert "7 of its 9 values differ" in out and "only change of a single filter entry" in out
    assert "w0[:,:,2]\n     1  -1   0\n    -1   1   1\n     1  -1   1" in out  # the slide's text, verbatim
    assert "output map 0:\n  0    2   -6\n -1   -5  -11\n -7   -7   -9\n= the slide's output map" in out
    assert main(["conv", "--demo", "stride-7x7", "--stride", "3"]) == 0
    out = capsys.readouterr().out
    assert "(7 - 3 + 2*0)/3 + 1 = 2.33" in out and "slide's output" not in out


def test_cli_lists_every_demo():
    from cnnlab.cli.conv import DEMO_NAMES  # kept literal so `cnnlab --help` need not import torch

    assert DEMO_NAMES == tuple(DEMOS)


def test_every_conv_option_is_described():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("conv",):
        undescribed = [a.option_strings for a in sub.choices[name]._actions if not a.help]
        assert undescribed == [], undescribed
    from cnnlab.cli.explain import conv_parser, model_parser

    for p in (conv_parser(), model_parser()):
        assert [a.dest for a in p._actions if a.help is None] == []


def _cli(*argv, cwd=None):
    import os

    env = {**os.environ, "PYTHONPATH": os.getcwd() if cwd is None else str(cwd)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *argv], capture_output=True, text=True, env=env)


def test_explain_conv_writes_the_page(tmp_path):
    r = _cli("explain", "conv", "--demo", "filter-bank", "--html", str(tmp_path / "out" / "conv.html"))
    assert r.returncode == 0, r.stderr
    assert "conv.html" in r.stdout and (tmp_path / "out" / "conv.html").stat().st_size > 10_000
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["conv.html"]  # no temporary left behind
    r = _cli("explain", "conv", "--stride", "0", "--html", str(tmp_path / "x.html"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--stride: must be >= 1" in r.stderr


@pytest.mark.parametrize("argv, message", [
    (["explain", "conv", "--html", "{tmp}"], "is a directory"),
    (["explain", "conv", "--html", "{tmp}/file.txt/page.html"], "is a file, not a directory"),
    (["explain", "conv", "--stride", "0", "--demo", "x-filter", "--html", "{tmp}/p.html"], "--stride: must be >= 1"),
    (["explain", "conv", "--demo", "nope", "--html", "{tmp}/p.html"], "--demo: invalid choice"),
    (["explain", "conv", "--input", "1 2; 3 4", "--html", "{tmp}/p.html"], "--input and --kernel are required"),
    (["explain", "conv", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 1", "--kernel", "1",
      "--html", "{tmp}/p.html"], "kernels of one size"),
    (["explain", "conv", "--input", "{tmp}/bad.npy", "--kernel", "1", "--html", "{tmp}/p.html"],
     "bad.npy: not a readable .npy array"),
    (["conv", "--input", "{tmp}/bin.txt", "--kernel", "1"], "bin.txt: cannot read it as text"),
    (["conv", "--input", "{tmp}/nan.json", "--kernel", "1"], "every value must be a finite number"),
    (["conv", "--input", "1 2; 3 4", "--kernel", "1", "--bias", "1", "2"], "--bias: 1 kernel(s) but 2"),
    (["conv", "--demo", "x-filter", "--pool", "max", "--pool-size", "4"], "--pool-size 4 is larger than"),
    (["conv", "--demo", "cartesian-axes", "--stride", "2"], "--demo cartesian-axes pools with max 2"),
    (["explain", "conv", "--input", "1 2; 3 4", "--kernel", "1 1 1; 1 1 1; 1 1 1", "--html", "{tmp}/p.html"],
     "too small"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, message):
    """In-process for speed (argparse's own errors exit through SystemExit(2)); the subprocess test above
    covers the real `python -m cnnlab` path."""
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "nan.json").write_text("[[1, NaN], [2, 3]]")
    try:
        rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not (tmp_path / "p.html").exists()


def test_fractions_stay_exact_in_the_page():
    spec = conv_spec("1 1; 1 1", ["1/3 1/3; 1/3 0"])
    cfg = example_data(spec, "yours", "t")["configs"]["1,0"]
    assert cfg["maps"] == [[["1"]]] and cfg["sums"][0][0][0] == ["1"]  # 1/3+1/3+1/3 is exactly 1
    assert walk(spec.input, spec.kernels, spec.biases, 1, 0).maps == [[[Fraction(1)]]]


def test_page_budget_keeps_the_given_configuration_first():
    spec = conv_spec(demo=DEMOS["stride-7x7"], stride=2)
    data = example_data(spec, "yours", "t", budget=9 * 9 + 25 * 9)  # stride 2 (3x3 units) and stride 1 (5x5)
    assert list(data["configs"]) == ["2,0", "1,0"] and "3,0" in data["skipped"]
    with pytest.raises(ConfigError, match="more than a page shows"):
        example_data(spec, "yours", "t", budget=10)
