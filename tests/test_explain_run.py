"""`cnnlab explain RUN_DIR IMAGE`: the page's numbers against PyTorch and the run's own data pipeline (input,
feature maps, kernels, probabilities), its size budget, and one-line errors for every bad input.

Two real runs are trained once per module (1 epoch, tiny): LeNet-5 on the digits (grey) and ResNet-18 with
the CIFAR stem on a generated RGB image folder of odd-sized images, resized and zero-padded (colour)."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabWarning, ConfigError
from cnnlab.explain.run_page import (PAGE_BUDGET, Explained, RunPageConfig, StageTrace, explain_image, page_data,
                                     run_page, stage_data)
from cnnlab.models import build_model
from cnnlab.runs import Preprocess, Run

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


def make_colour_folder(root: Path) -> Path:
    """A tiny RGB image folder with train/val/test splits: a coloured square on dark noise, images of
    varied (non-square) sizes so that the run's shorter-side resize and crop do real work."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(14, 30, size=2))
                img = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
                img[h // 4:3 * h // 4, w // 4:3 * w // 4] = colour
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def make_runs(root: Path) -> dict:
    """Train the two runs and pick one test image of each: {"grey": {...}, "rgb": {...}}, each with the run
    directory, the image file and its index in the run's own test split."""
    from cnnlab.train import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CnnlabWarning)
        grey = train(epochs=1, limit_per_class=10, threads=1, quiet=True, out=str(root / "lenet5-digits")).run_dir
        folder = make_colour_folder(root / "colours")
        rgb = train(model="resnet18", data=str(folder), model_opts={"stem": "cifar"}, image_size=12, pad=2, epochs=1,
                    batch_size=8, threads=1, quiet=True, out=str(root / "resnet18-colours")).run_dir
    torch.set_num_threads(1)
    digits = Run.open(grey).dataset()
    index = 5
    digit = root / "digit.png"  # a digits test image, 32x32 grey: decoding it gives the same pixels back
    Image.fromarray(digits.test.images[index, 0].numpy()).save(digit)
    # The colour run's test split is test/<class>/<file> in sorted order: blue 0, 1, green 0, 1, red 0, 1.
    return {"grey": {"run": Path(grey), "image": digit, "index": index},
            "rgb": {"run": Path(rgb), "image": folder / "test" / "green" / "1.png", "index": 3}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def embedded(html: str) -> dict:
    return json.loads(re.search(r'id="page-data">(.*?)</script>', html, re.S).group(1))


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def oracle(run: Run, image_u8: torch.Tensor):
    """The run's model on the image normalised by hand from the run's recorded mean/std: (stage input, softmax)."""
    pre = run.preprocess
    mean, std = torch.tensor(pre.mean).view(-1, 1, 1), torch.tensor(pre.std).view(-1, 1, 1)
    x = ((image_u8.double() / 255 - mean) / std).float()[None]
    model = run.model("final")
    with torch.no_grad():
        return x, model, torch.softmax(model(x).double(), 1)[0]


@pytest.fixture(scope="module")
def pages(runs):
    out = {}
    for kind, r in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", CnnlabWarning)  # a same-channel image needs no note
            html = run_page(RunPageConfig(str(r["run"]), str(r["image"])))
        out[kind] = {"html": html, "data": embedded(html), **r}
    return out


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_input_and_probabilities_follow_the_runs_own_pipeline(pages, kind):
    """The page's input is the image exactly as the run's data pipeline delivers it (its test split:
    decoded, resized, padded), and its probabilities are the softmax of `run.model("final")` on the run's
    own test loader's batch for that image and on the image normalised by hand."""
    page = pages[kind]
    run = Run.open(page["run"])
    dataset = run.dataset()
    expected = dataset.test.images[page["index"]]
    shown = np.asarray(decode_png(page["data"]["image"]["uri"]))
    shown = shown[None] if shown.ndim == 2 else shown.transpose(2, 0, 1)
    assert page["data"]["image"]["shape"] == list(expected.shape) == [run.preprocess.channels, 32 if kind == "grey"
                                                                      else 16, 32 if kind == "grey" else 16]
    assert np.array_equal(shown, expected.numpy())
    if kind == "rgb":
        assert (expected[:, :2] == 0).all() and (expected[:, :, -2:] == 0).all()  # the run's pad of 2
    x_loader = next(iter(run.loader("test", dataset=dataset)))[0][page["index"]:page["index"] + 1]
    x_hand, model, probs = oracle(run, expected)
    assert torch.allclose(x_loader, x_hand, atol=1e-5)
    with torch.no_grad():
        from_loader = torch.softmax(model(x_loader).double(), 1)[0]
    on_page = torch.tensor([p["p"] for p in sorted(page["data"]["probs"], key=lambda p: p["index"])],
                           dtype=torch.float64)
    assert len(on_page) == run.num_classes and abs(on_page.sum().item() - 1) < 1e-9
    assert torch.allclose(on_page, from_loader, atol=1e-6) and torch.allclose(on_page, probs, atol=1e-5)
    assert page["data"]["predicted"] == int(probs.argmax())
    assert [p["class"] for p in page["data"]["probs"]] == [run.classes[i] for i in probs.argsort(descending=True)]


def _stage_outputs(kind: str, model, x) -> dict:
    """Each stage's output computed by calling the model's modules in turn (no hooks): the paper's layout."""
    with torch.no_grad():
        if kind == "grey":  # LeNet-5: C1 S2 | C3 S4 | C5
            f = model.features
            stem = f[0:3](x)
            stage1 = f[3:6](stem)
            return {"stem": stem, "stage1": stage1, "stage2": f[6:8](stage1)}
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        out, maps = stem, {"stem": stem}
        for i in range(1, 5):
            out = getattr(model, f"layer{i}")(out)
            maps[f"stage{i}"] = out
        return maps


def _indices(maps: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """Palette indices by the page's documented rule: 0…max when nothing is negative, else ±max|v|."""
    lo, hi = float(maps.min()), float(maps.max())
    lo, hi = (0.0, hi) if lo >= 0 else (-max(-lo, hi), max(-lo, hi))
    return np.rint(((maps - lo) / (hi - lo) * 255).numpy()).clip(0, 255), lo, hi


@pytest.mark.parametrize("kind, channels", [("grey", [6, 16, 120]), ("rgb", [64, 64, 128, 256, 512])])
def test_tiles_are_each_stages_feature_maps(pages, kind, channels):
    """One tile per channel (the first 64): the stage outputs of LeNet-5 (6, 16, 120 maps) and ResNet-18
    (64, 64, 128, 256, 512), each tile's colours being that channel's values on the stage's scale."""
    page = pages[kind]
    run = Run.open(page["run"])
    image = run.dataset().test.images[page["index"]]
    x, model, _ = oracle(run, image)
    maps = _stage_outputs(kind, model, x)
    stages = page["data"]["stages"]
    assert [s["name"] for s in stages] == list(maps) and [s["shape"][0] for s in stages] == channels
    for stage in stages:
        full = maps[stage["name"]][0]
        assert stage["shape"] == list(full.shape) and stage["shown"] == len(stage["tiles"]) == min(64, len(full))
        codes, lo, hi = _indices(full)
        assert (stage["scale"]["lo"], stage["scale"]["hi"]) == pytest.approx((lo, hi), rel=1e-5, abs=1e-6)
        pal = (colormaps[stage["scale"]["palette"]](np.linspace(0, 1, 256))[:, :3] * 255).round()
        same = []
        for k, tile in enumerate(stage["tiles"]):
            img = decode_png(tile["uri"])
            assert img.mode == "P" and img.size == (full.shape[2], full.shape[1])  # no downsampling at this size
            got = np.asarray(img)
            assert np.abs(got.astype(int) - codes[k]).max() <= 1
            same.append(got == codes[k])
            assert np.array_equal(np.array(img.getpalette()[:768]).reshape(256, 3), pal)
            ch = full[k]
            top = float(full[:64].abs().max())
            assert tile["stats"] == pytest.approx([ch.min().item(), ch.max().item(), ch.mean().item()], abs=top * 5e-3)
        # a value on a rounding boundary may land one index off (the page's batch and ours differ in the last
        # bit); over the stage's tiles, not per tile: ResNet's last stage has 2x2 tiles, where one pixel is 25 %
        assert np.concatenate([t.ravel() for t in same]).mean() > 0.95


def test_kernels_are_those_of_the_convolution_that_made_the_channel(pages):
    grey, rgb = (Run.open(pages[k]["run"]).model("final") for k in ("grey", "rgb"))
    lenet = {s["name"]: s["conv"] for s in pages["grey"]["data"]["stages"]}
    assert [lenet[s]["name"] for s in ("stem", "stage1", "stage2")] == ["features.0", "features.3", "features.6"]
    for name, conv in lenet.items():
        weight = grey.get_submodule(conv["name"]).weight.detach()
        inputs = min(16, weight.shape[1])
        assert conv["shown_inputs"] == inputs and conv["kernel"] == [5, 5]
        kernels = torch.tensor(conv["kernels"], dtype=torch.float64)
        assert torch.allclose(kernels, weight[:64, :inputs].double(), atol=conv["scale"] * 5e-3)
    resnet = {s["name"]: s["conv"] for s in pages["rgb"]["data"]["stages"]}
    assert resnet["stem"]["name"] == "conv1" and resnet["stage2"]["name"] == "layer2.1.conv2"
    w = rgb.layer2[1].conv2.weight.detach()
    assert torch.allclose(torch.tensor(resnet["stage2"]["kernels"], dtype=torch.float64), w[:64, :16].double(),
                          atol=resnet["stage2"]["scale"] * 5e-3)
    assert resnet["stage2"]["first_input"] == [0] * 64 and resnet["stage2"]["per_channel_inputs"] == 128


def _explain(model, size):
    pre = Preprocess(size[1:], size[0], "squash", 0, (0.5,) * size[0], (0.25,) * size[0])
    image = torch.randint(0, 256, size, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return explain_image(model.eval(), image, pre)


def test_grouped_kernels_name_the_inputs_autograd_says_they_see():
    """A depthwise convolution's channel k sees only input k: the page's first_input per channel, checked
    with autograd (which input channels a channel's output depends on)."""
    model = build_model("conv3-6p1 > relu > dwconv3p1 > relu > maxpool2 > fc10", in_channels=2, input_size=(8, 8))
    ex = _explain(model, (2, 8, 8))
    stem = stage_data(ex.traces[0], 64, 64, {"viridis": np.zeros((256, 3), np.uint8),
                                              "RdBu_r": np.zeros((256, 3), np.uint8)})
    conv = model.features[2]
    assert stem["conv"]["name"] == "features.2" and stem["conv"]["groups"] == 6
    z = torch.randn(1, 6, 8, 8)
    for k in range(6):
        grad = torch.autograd.functional.jacobian(lambda t: conv(t)[0, k].sum(), z)[0]
        seen = [c for c in range(6) if grad[c].abs().sum() > 0]
        first, per = stem["conv"]["first_input"][k], stem["conv"]["per_channel_inputs"]
        assert seen == list(range(first, first + per))
        kernel = torch.tensor(stem["conv"]["kernels"][k], dtype=torch.float64)
        assert torch.allclose(kernel, conv.weight[k].detach().double(), atol=1e-3)


def test_concatenated_channels_have_no_single_convolution():
    """GoogLeNet's stages end in Inception modules whose channels are four branches concatenated: no kernels
    are claimed for them, while the stem (ending in conv3) has its own."""
    ex = _explain(build_model("googlenet", num_classes=5, input_size=(64, 64)), (3, 64, 64))
    convs = {t.name: t.conv_name for t in ex.traces}
    assert convs == {"stem": "conv3.conv", "stage1": None, "stage2": None, "stage3": None}
    assert [tuple(t.output.shape) for t in ex.traces][1:] == [(480, 4, 4), (832, 2, 2), (1024, 2, 2)]  # Table 1


def test_large_maps_are_averaged_down_for_display():
    """A 150x150 map is shown as its 3x3 averages (50x50), the factor the page states; colours on the scale
    of the full-resolution map."""
    model = build_model("conv3-4p1 > relu > fc10", in_channels=1, input_size=(150, 150))
    ex = _explain(model, (1, 150, 150))
    data = page_data(ex, [str(i) for i in range(10)], {})
    stem = data["stages"][0]
    assert stem["map"] == [150, 150] and stem["tile"] == [50, 50]
    full = ex.traces[0].output
    lo, hi = stem["scale"]["lo"], stem["scale"]["hi"]
    expected = np.rint(((F.avg_pool2d(full[None], 3)[0] - lo) / (hi - lo) * 255).numpy()).clip(0, 255)
    for k, tile in enumerate(stem["tiles"]):
        got = np.asarray(decode_png(tile["uri"])).astype(int)
        assert got.shape == (50, 50) and np.abs(got - expected[k]).max() <= 1


def test_page_is_self_contained_and_within_budget(pages, runs):
    for page in pages.values():
        html = page["html"]
        assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html) and "https://" not in html
        assert len(html.encode()) <= PAGE_BUDGET
    # A tighter budget: smaller tiles, then fewer channels, said on the page and as a note.
    budget = 120_000
    with pytest.warns(CnnlabWarning, match="at most"):
        html = run_page(RunPageConfig(str(runs["rgb"]["run"]), str(runs["rgb"]["image"]), budget=budget))
    data = embedded(html)
    assert len(html.encode()) <= budget and "to stay within" in data["notes"][0]
    assert max(len(s["tiles"]) for s in data["stages"]) < 64
    with pytest.raises(ConfigError, match="over its budget of 5,000 bytes"):
        run_page(RunPageConfig(str(runs["rgb"]["run"]), str(runs["rgb"]["image"]), budget=5_000))


def test_non_finite_activations_are_a_one_line_error():
    model = build_model("lenet5").eval()
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match="non-finite values .* in stage1 for this image"):
        _explain(model, (1, 32, 32))


def test_a_grey_image_for_a_colour_run_is_copied_to_three_channels(runs):
    with pytest.warns(CnnlabWarning, match="digit.png is grey but the run was trained on 3-channel images; "
                      "converted to RGB"):
        html = run_page(RunPageConfig(str(runs["rgb"]["run"]), str(runs["grey"]["image"])))
    image = np.asarray(decode_png(embedded(html)["image"]["uri"]))
    assert image.shape == (16, 16, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    assert image[2:14, 2:14].any() and not image[:2].any()  # the digit, inside the run's 2-pixel padding


def test_a_fully_connected_stage_is_one_tile_of_units():
    model = build_model("lenet300", num_classes=10)
    ex = _explain(model, (1, 28, 28))
    data = page_data(ex, [str(i) for i in range(10)], {})
    (stem,) = data["stages"]
    assert stem["kind"] == "units" and stem["shape"] == [300] and len(stem["tiles"]) == 1 and stem["conv"] is None
    assert decode_png(stem["tiles"][0]["uri"]).size == (18, 17)  # 300 units in rows of 18


def test_explained_is_what_the_model_returns():
    """explain_image's probabilities are the model's own forward pass (hooks change nothing)."""
    model = build_model("lenet5").eval()
    ex = _explain(model, (1, 32, 32))
    assert isinstance(ex, Explained) and all(isinstance(t, StageTrace) for t in ex.traces)
    x = ((ex.image.float() / 255 - 0.5) / 0.25)[None]
    with torch.no_grad():
        assert torch.allclose(ex.probs, torch.softmax(model(x).double(), 1)[0], atol=1e-6)


# --- the command line ------------------------------------------------------------------------------------------

def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def _one_line_error(r, message, out: Path):
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("cnnlab explain") and message in r.stderr, r.stderr
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.fixture(scope="module")
def broken(runs, tmp_path_factory):
    """A run without weights, one with damaged weights, an undecodable image and a truncated PNG."""
    d = tmp_path_factory.mktemp("broken")
    src = runs["grey"]["run"]
    for name in ("no-weights", "bad-weights"):
        shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("model*.safetensors", "checkpoints"))
    (d / "bad-weights" / "model.safetensors").write_bytes(b"\x00" * 64)
    (d / "not-an-image.png").write_text("this is text, not a PNG\n")
    (d / "truncated.png").write_bytes(runs["rgb"]["image"].read_bytes()[:70])
    return d


def test_cli_writes_the_page(runs, tmp_path):
    out = tmp_path / "page.html"
    r = _cli("explain", runs["grey"]["run"], runs["grey"]["image"], "--html", out)
    assert r.returncode == 0 and r.stderr == "" and f"wrote {out}" in r.stdout, r.stderr
    assert embedded(out.read_text())["kind"] == "run"


def test_cli_converts_another_channel_count_with_a_note(runs, tmp_path):
    out = tmp_path / "page.html"
    r = _cli("explain", runs["grey"]["run"], runs["rgb"]["image"], "--html", out)
    assert r.returncode == 0 and out.is_file(), r.stderr
    assert r.stderr.count("\n") == 1 and "note: 1.png is colour" in r.stderr and "converted to grey" in r.stderr
    data = embedded(out.read_text())
    assert data["image"]["shape"] == [1, 32, 32] and "converted to grey" in data["image"]["description"]


@pytest.mark.parametrize("case, message", [
    ("no-weights", "no final weights"),
    ("not-an-image", "not-an-image.png: undecodable image"),
    ("missing", "missing.png: no such file"),
])
def test_cli_bad_inputs_through_a_real_process(runs, broken, tmp_path, case, message):
    run, image = runs["grey"]["run"], runs["grey"]["image"]
    if case == "no-weights":
        run = broken / "no-weights"
    elif case == "not-an-image":
        image = broken / "not-an-image.png"
    else:
        image = tmp_path / "missing.png"
    out = tmp_path / "sub" / "page.html"
    _one_line_error(_cli("explain", run, image, "--html", out), message, out)


@pytest.mark.parametrize("argv, message", [
    (["{bad-weights}", "{image}"], "not a readable safetensors file"),
    (["{run}", "{truncated}"], "truncated.png: undecodable image"),
    (["{run}", "{broken}"], "not a file"),
    (["{broken}", "{image}"], "not a run directory"),
    (["lenet5", "{image}"], "needs a trained run directory"),
    (["{run}", "{image}", "--weights", "ema"], "no ema weights"),
    (["{run}", "{image}", "--weights", "newest"], "--weights: 'newest'"),
    (["{run}", "{image}", "--max-channels", "0"], "--max-channels: expected a positive integer"),
    (["{run}", "{image}", "--input", "1x32x32"], "--input: a run's image page uses the run's own"),
    (["lenet5", "--max-channels", "8"], "--max-channels applies to a run's image page"),
])
def test_cli_errors_are_one_line(runs, broken, tmp_path, capsys, argv, message):
    subs = {"{run}": runs["grey"]["run"], "{image}": runs["grey"]["image"], "{broken}": broken,
            "{bad-weights}": broken / "bad-weights", "{truncated}": broken / "truncated.png"}
    out = tmp_path / "page.html"
    try:
        rc = main(["explain", *[str(subs.get(a, a)) for a in argv], "--html", str(out)])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()
