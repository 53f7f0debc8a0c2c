"""`cnnlab explain MODEL`: pixel contribution counts against brute force, autograd and the lecture's LeNet
table; the traced data-flow graph against torch.fx; the page's data against the analysis; one-line errors."""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.fx as fx

from cnnlab.analysis.resolve import resolve_model
from cnnlab.analysis.summary import summarize
from cnnlab.cli import main
from cnnlab.explain.contribution import axis_counts, contribution_map
from cnnlab.explain.model_page import ModelPageConfig, model_page, page_data
from cnnlab.models import build_model

LENET_CONV = "conv5-6p2 > relu > maxpool2 > conv5-16p2 > relu > maxpool2 > fc100 > relu > fc10"


def analysed(spec, size=None):
    model, name, size = resolve_model(spec, size)
    return summarize(model, size, name=name)


def brute_force(h, w, ho, wo, rf) -> torch.Tensor:
    """Mark every unit's window, one unit at a time (pixel p is in unit k's window when
    |p - (c + k*j)| <= (r - 1)/2), and count."""
    counts = torch.zeros(h, w, dtype=torch.int64)
    for i in range(ho):
        for j in range(wo):
            ci, cj = rf["centre"][0] + i * rf["jump"][0], rf["centre"][1] + j * rf["jump"][1]
            hi, hj = (rf["size"][0] - 1) / 2, (rf["size"][1] - 1) / 2
            for p in range(h):
                for q in range(w):
                    if abs(p - ci) <= hi and abs(q - cj) <= hj:
                        counts[p, q] += 1
    return counts


@pytest.mark.parametrize("rf, hw, out", [
    ({"size": [16, 16], "jump": [4, 4], "centre": [1.5, 1.5]}, (28, 28), (7, 7)),
    ({"size": [7, 5], "jump": [2, 1], "centre": [0, -1]}, (13, 9), (7, 7)),
    ({"size": [6, 3], "jump": [3, 2], "centre": [2.5, 1]}, (12, 10), (3, 4)),
])
def test_contribution_map_equals_brute_force(rf, hw, out):
    assert torch.equal(contribution_map(hw, out, rf), brute_force(*hw, *out, rf))


def _jacobian_counts(notation, size, layer_index):
    """Autograd as the oracle: with every weight 1, biases 0, average pooling and no activations, output
    unit u depends on input pixel p exactly when p lies in u's receptive field; count, per pixel, the
    units of the layer (channel 0) with a nonzero derivative."""
    model = build_model(notation, in_channels=size[0], input_size=size[1:])
    with torch.no_grad():
        for prm in model.parameters():
            prm.fill_(1.0 if prm.dim() > 1 else 0.0)
    trunk = model.features[:layer_index + 1].double()
    x = torch.rand(1, *size, dtype=torch.float64) + 0.5
    jac = torch.autograd.functional.jacobian(lambda t: trunk(t)[0, 0].flatten(), x)  # (units, 1, C, H, W)
    return (jac[:, 0, 0] != 0).sum(0)


@pytest.mark.parametrize("notation, size, layer", [
    ("conv5-6p2 > avgpool2 > conv5-16p2 > avgpool2 > fc10", (1, 28, 28), 3),
    ("conv3-2s2p1 > conv5-2p2 > avgpool3s2p1 > conv3-2s1p0 > fc10", (1, 23, 19), 3),
])
def test_contribution_map_equals_autograd_dependence(notation, size, layer):
    s = analysed(notation, size).to_dict()
    row = s["layers"][layer]
    counts = contribution_map(size[1:], tuple(row["output_shape"][2:]), row["receptive_field"])
    assert torch.equal(counts, _jacobian_counts(notation, size, layer))


def test_lenet_border_table_of_the_lecture():
    """Lecture 001, "Convolutional LeNet300 - Receptive Field (1-D)": conv5 (pad 2) - maxpool2 - conv5
    (pad 2) - maxpool2 on 28 pixels; 7 final units per axis, "receptive field up to 16x16", "input stride
    2^#maxpools" = 4. Its "Tot" row (how many final units see each pixel) reads
        2 2 3 3 3 3 4 4 4 4 4 3 3 3 3 4 4 4 4 4 4 3 3 3 3 2 2
    in the seed's text. The border runs are what the slide teaches ("pixels on the border contribute
    less") and match exactly; the seed's middle run of 3s cannot come from windows of 16 pixels every 4
    pixels (every interior pixel is then seen by exactly 16/4 = 4 of them), so the table was garbled in
    transcription there (its row count also differs between the slide's three copies)."""
    s = analysed(LENET_CONV, (1, 28, 28)).to_dict()
    last_pool = [r for r in s["layers"] if r["type"] == "MaxPool2d"][-1]
    rf = last_pool["receptive_field"]
    assert rf["size"] == [16, 16] and rf["jump"] == [4, 4] and last_pool["output_shape"][2:] == [7, 7]
    tot = axis_counts(28, 7, rf["size"][1], rf["jump"][1], rf["centre"][1]).tolist()
    lecture = [2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2]
    assert tot[:11] == lecture[:11] and tot[-6:] == lecture[-6:]
    assert tot[11:22] == [4] * 11
    assert tot.index(4) == 6  # unit 0 (the slide's FM 1) covers pixels 1-10: the first ten columns
    page = page_data(analysed(LENET_CONV, (1, 28, 28)))
    table = page["counts"][page["counts_of_row"][str(s["layers"].index(last_pool))]]
    assert table["rows"] == tot and table["cols"] == tot and (table["min"], table["max"]) == (4, 16)


def _module_skeleton_fx(model):
    """torch.fx's graph of `model`, contracted to module calls: {module call: module calls it reads},
    module calls named target or target#k for the k-th call, as the analysis names rows."""
    graph = fx.symbolic_trace(model).graph
    calls, key_of = Counter(), {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] += 1
            key_of[node] = node.target + (f"#{calls[node.target]}" if calls[node.target] > 1 else "")
        elif node.op == "placeholder":
            key_of[node] = "input"
    memo = {}

    def sources(node):
        if node in key_of:
            return {key_of[node]}
        if node not in memo:
            memo[node] = set().union(*[sources(a) for a in node.all_input_nodes]) if node.all_input_nodes else set()
        return memo[node]

    return {key_of[n]: set().union(*[sources(a) for a in n.all_input_nodes])
            for n in graph.nodes if n.op == "call_module"}


def _module_skeleton_ours(summary):
    rows = summary.layers
    is_module = {f"row:{i}": r.type[:1].isupper() for i, r in enumerate(rows)}
    parents = {}
    for a, b in summary.edges:
        parents.setdefault(b, []).append(a)
    name = {f"row:{i}": r.name for i, r in enumerate(rows)}

    def sources(node):
        if node == "input" or is_module.get(node):
            return {"input" if node == "input" else name[node]}
        return set().union(*[sources(p) for p in parents.get(node, [])])

    return {name[n]: set().union(*[sources(p) for p in parents.get(n, [])]) for n in name if is_module[n]
            and rows[int(n[4:])].ran}


@pytest.mark.parametrize("model_name", ["resnet18", "googlenet", "mobilenet_v1"])
def test_traced_graph_agrees_with_torch_fx(model_name):
    """The analysis's edges (a TorchFunctionMode trace on meta tensors) against torch.fx's symbolic
    trace of the same model: every module call reads the same module calls (through adds, cats, relus)."""
    model = build_model(model_name).eval()
    summary = summarize(model, name=model_name)
    assert _module_skeleton_ours(summary) == _module_skeleton_fx(model)


def test_branching_models_are_graphs_not_lists():
    resnet = page_data(analysed("resnet18"))
    nodes = {n["id"]: n for n in resnet["nodes"]}
    adds = [n for n in resnet["nodes"] if n["name"].endswith(".add")]
    assert len(adds) == 8
    for a in adds:
        assert len([e for e in resnet["edges"] if e[1] == a["id"]]) == 2  # residual: block output + shortcut
    ds = next(n for n in resnet["nodes"] if n["name"] == "layer2.0.downsample.0")
    conv1 = next(n for n in resnet["nodes"] if n["name"] == "layer2.0.conv1")
    assert ds["level"] == conv1["level"] and ds["column"] != conv1["column"]  # side by side
    for a, b in resnet["edges"]:
        assert nodes[a]["level"] < nodes[b]["level"]  # every edge points down
    google = page_data(analysed("googlenet"))
    cats = [n for n in google["nodes"] if n["id"].startswith("join:")]
    assert len(cats) == 9 and google["columns"] == 4  # nine Inception modules, four branches each
    for c in cats:
        assert len([e for e in google["edges"] if e[1] == c["id"]]) == 4


def test_page_blocks_carry_the_analysis_numbers():
    summary = analysed("resnet18")
    doc, page = summary.to_dict(), page_data(summary)
    assert page["analysis"] == json.loads(json.dumps(doc))  # the analysis JSON, as is
    node = next(n for n in page["nodes"] if n["name"] == "layer4.1.conv2")
    row = doc["layers"][node["row"]]
    assert row["receptive_field"]["size"] == [435, 435]  # ResNet-18's published receptive field
    assert node["line2"] == "Conv2d · 512×7×7" and node["line3"] == "2.36M params · 231M FLOPs · RF 435"
    assert row["params"] == 512 * 512 * 9 and row["flops"] == 2 * 512 * 512 * 9 * 7 * 7


def test_model_page_is_self_contained():
    html = model_page(ModelPageConfig("conv3-8 > relu > maxpool2 > fc10", (1, 12, 12)))
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "https://" not in html and "</script><script" not in html.split('id="page-data">')[1].split("</script>")[0]
    assert len(html) < 200_000


def _cli(*argv):
    import os

    return subprocess.run([sys.executable, "-m", "cnnlab", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_explain_model_cli(tmp_path):
    out = tmp_path / "lenet.html"
    r = _cli("explain", "lenet5", "--html", str(out))
    assert r.returncode == 0 and "lenet.html" in r.stdout and out.stat().st_size > 5_000, r.stderr


@pytest.mark.parametrize("argv, message", [
    (["explain", "conv3-8 > fc10", "--html", "{tmp}/p.html"], "needs --input CxHxW"),
    (["explain", "resnet9000", "--html", "{tmp}/p.html"], "resnet9000"),
    (["explain", "lenet5", "--input", "1x32", "--html", "{tmp}/p.html"], "--input must be CxHxW"),
    (["explain", "lenet5", "--input", "1x4x4", "--html", "{tmp}/p.html"], "too small"),
    (["explain", "lenet5", "--html", "{tmp}"], "is a directory"),
    (["explain", "lenet5"], "--html"),
    (["explain", "{tmp}", "{tmp}/photo.png", "--html", "{tmp}/p.html"], "photo.png: no such file"),
    (["explain", "lenet5", "--num-classes", "0", "--html", "{tmp}/p.html"], "--num-classes must be positive"),
])
def test_model_errors_are_one_line(tmp_path, capsys, argv, message):
    try:
        rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "p.html").exists()


def test_explain_a_saved_run_directory(tmp_path, capsys):
    """A run directory (config.json, as `cnnlab train` saves it) draws the run's architecture."""
    (tmp_path / "config.json").write_text(json.dumps({"model": "lenet5", "num_classes": 7, "in_channels": 1,
                                                      "image_size": 32}))
    out = tmp_path / "run.html"
    assert main(["explain", str(tmp_path), "--html", str(out)]) == 0
    html = out.read_text()
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', html, re.S).group(1))
    assert data["analysis"]["totals"]["output_shape"] == [1, 7] and data["analysis"]["input_size"] == [1, 32, 32]
