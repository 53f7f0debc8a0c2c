"""Batch-norm folding (outputs equal the unfused eval-mode model's) and export (ONNX through onnxruntime,
TorchScript, safetensors) of every zoo family, parity-checked on real digit images; `cnnlab export`
end to end, including what a failed parity check leaves behind (nothing)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabWarning
from cnnlab.eval.export import ParityError, export_model, export_run
from cnnlab.eval.fuse import fold_batchnorm, fuse_bn
from cnnlab.models import build_model
from cnnlab.runs import Run
from cnnlab.train import train

ROOT = Path(__file__).resolve().parents[1]
BN = (nn.BatchNorm1d, nn.BatchNorm2d)

# Every zoo family that has BN, small inputs and 3 classes: (name, input size, options).
BN_FAMILIES = [
    ("resnet18", 32, {}), ("resnet50", 32, {}), ("resnet18", 32, {"shortcut": "A"}), ("plain18", 32, {}),
    ("vgg11_bn", 32, {}), ("googlenet", 32, {}), ("mobilenet_v1", 32, {"width_mult": 0.25}),
    ("conv3-8 > bn > relu > maxpool2 > conv3-16 > bn > relu > gap > fc12 > bn > relu > fc3", 16, {}),
]
ALL_FAMILIES = [("lenet5", 32, {}), ("alexnet", 67, {}), ("vgg11_bn", 32, {}), ("googlenet", 32, {}),
                ("resnet18", 32, {}), ("mobilenet_v1", 32, {"width_mult": 0.25})]


def cnnlab(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def digit_images():
    """Real images: 96 digits, RGB 67x67, normalised per channel."""
    ds = load_dataset("digits", image_size=67, channels=3, limit_per_class=12)
    x = ds.train.images.float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def real_batch(images: torch.Tensor, size: int, channels: int = 3) -> torch.Tensor:
    x = nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)
    return x[:, :channels]


def calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give every BN real running statistics (a cumulative average over `x`, as after training) and a
    non-trivial affine map, so folding has something to fold; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, BN):
            m.reset_running_stats()
            m.momentum = None
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return float((ya - yb).abs().max()), float(ya.abs().max())


@pytest.mark.parametrize("kind", ["conv-bn", "conv-bn-relu", "linear-bn"])
def test_folding_the_basic_pairs_is_exact_to_1e5(kind, digit_images):
    torch.manual_seed(0)
    x = real_batch(digit_images, 16)
    if kind == "linear-bn":
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 20), nn.BatchNorm1d(20))
    else:
        layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)] + ([nn.ReLU()] if kind == "conv-bn-relu" else [])
        model = nn.Sequential(*layers)
    model = calibrated(model, x)
    result = fold_batchnorm(model)
    diff, _ = max_diff(model, result.model, x)
    assert diff <= 1e-5
    assert len(result.folded) == 1 and not result.left
    assert not any(isinstance(m, BN) for m in result.model.modules())
    assert result.layers_after == result.layers_before - 1
    assert any(isinstance(m, BN) for m in model.modules())  # the original is left untouched


@pytest.mark.parametrize("name, size, opts", BN_FAMILIES, ids=[f"{n[:12]}{o or ''}" for n, _, o in BN_FAMILIES])
def test_folding_every_zoo_family_with_bn(name, size, opts, digit_images):
    """Deep untrained nets with BN statistics from 96 images amplify float32 rounding (their own float32
    outputs are off the float64 ones by up to ~1e-3), so the oracle is float64 arithmetic: the folded
    float32 model must be as close to the exact (float64, unfused) outputs as the unfused float32 model
    is, and within 1e-5 of it where that rounding noise allows (the trained-run test checks 1e-5 flat)."""
    torch.manual_seed(0)
    x = real_batch(digit_images, size)
    model = calibrated(build_model(name, num_classes=3, in_channels=3, input_size=(size, size), **opts), x)
    bns = sum(isinstance(m, BN) for m in model.modules())
    result = fold_batchnorm(model)
    with torch.no_grad():
        unfused, fused = model(x).double(), result.model(x).double()
        exact = copy.deepcopy(model).double()(x.double())
    noise = float((unfused - exact).abs().max())
    assert float((fused - exact).abs().max()) <= 2 * noise + 1e-6, noise
    assert float((fused - unfused).abs().max()) <= max(1e-5, 3 * noise)
    assert len(result.folded) == bns and not result.left
    assert not any(isinstance(m, BN) for m in result.model.modules())
    assert result.layers_after == result.layers_before - bns
    assert type(result.model) is type(model) and hasattr(result.model, "forward_features")


def test_bn_after_the_activation_is_left_with_a_note(digit_images):
    x = real_batch(digit_images, 32)
    model = calibrated(build_model("vgg11_bn", num_classes=3, input_size=(32, 32), order="conv-act-bn"), x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = fuse_bn(model)
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    assert len(notes) == 8 and "features.2 left unfolded: it follows features.1 (ReLU), not a Conv2d" in notes[0]
    assert max_diff(model, fused, x)[0] == 0.0
    # A BN after a sum (a residual join) or a concatenation is not after one layer either:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    branch = ResidualThenBN()
    result = fold_batchnorm(calibrated(branch, x))
    assert [bn for bn, _ in result.left] == ["bn"] and "add" in result.left[0][1]
    assert fold_batchnorm(calibrated(net, x)).folded == [("0", "1")]
    # ...nor one whose conv output is also used elsewhere (folding would change that other use)
    shared = calibrated(SharedConvOutput(), x)
    result = fold_batchnorm(shared)
    assert result.left == [("bn", "the output of conv is also used elsewhere")]
    assert max_diff(shared, result.model, x)[0] == 0.0


class SharedConvOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class ResidualThenBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x) + x)


@pytest.mark.slow
@pytest.mark.parametrize("name, size, opts", ALL_FAMILIES, ids=[n for n, _, _ in ALL_FAMILIES])
def test_onnx_export_of_every_zoo_family_passes_the_onnxruntime_parity_check(name, size, opts, digit_images,
                                                                               tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    channels = 1 if name == "lenet5" else 3
    x = real_batch(digit_images, size, channels)[:16]
    model = calibrated(build_model(name, num_classes=3, in_channels=channels, input_size=(size, size), **opts),
                       real_batch(digit_images, size, channels))
    # torchvision's classifier init (N(0, 0.01)): the zoo's Kaiming-initialised classifiers give an untrained
    # deep net logits in the tens, where float32 rounding alone (measured against float64: up to 5e-4 for
    # GoogLeNet) would exceed the 1e-4 parity tolerance whatever the exporter did.
    with torch.no_grad():
        model.get_classifier().weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    result = export_model(model, "onnx", tmp_path / f"{name}.onnx", batch=x, metadata={"classes": ["a", "b", "c"]})
    assert result.max_abs_diff <= 1e-4 and result.parity_images == 16
    # independently: onnxruntime on another batch size (the batch axis is dynamic) against torch
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    got = session.run(None, {"input": x[:5].numpy()})[0]
    with torch.no_grad():
        assert abs(got - model(x[:5]).numpy()).max() <= 1e-4
    assert json.loads(session.get_modelmeta().custom_metadata_map["cnnlab"])["classes"] == ["a", "b", "c"]


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """A small trained run of a notation net with conv-BN and linear-BN pairs."""
    out = tmp_path_factory.mktemp("export") / "run"
    train(model="conv5-8 > bn > relu > maxpool2 > conv3-16 > bn > relu > maxpool2 > fc32 > bn > relu > fc10",
          epochs=2, threads=1, quiet=True, lr=0.05, out=str(out))
    return Run.open(out)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_run_formats_round_trip_with_metadata(bn_run, fmt, tmp_path):
    out = tmp_path / f"model.{fmt}"
    result = export_run(bn_run, fmt, out, fuse_bn=True, parity_images=40)
    assert result.max_abs_diff <= 1e-4 and result.folded == 3 and result.layers_after == result.layers_before - 3
    meta = json.loads(result.sidecar.read_text())
    assert meta["classes"] == bn_run.classes and meta["preprocess"] == bn_run.preprocess.to_dict()
    assert meta["fused_bn"] is True and meta["parity"]["images"] == 40
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(out), "pt") as fh:
            assert json.loads(fh.metadata()["cnnlab"])["classes"] == bn_run.classes
            assert not any("running_mean" in k for k in fh.keys())
    if fmt == "torchscript":
        extra = {"cnnlab.json": ""}
        loaded = torch.jit.load(str(out), _extra_files=extra)
        assert json.loads(extra["cnnlab.json"])["model"] == bn_run.config.model
        x, _ = next(iter(bn_run.loader("test", batch_size=7)))
        with torch.no_grad():
            assert (loaded(x) - bn_run.model()(x)).abs().max() <= 1e-4  # batch 7: the batch axis is dynamic


def test_folding_a_trained_run_is_within_1e5(bn_run):
    x, _ = next(iter(bn_run.loader("test", batch_size=200)))
    model = bn_run.model()
    result = fold_batchnorm(model)
    diff, scale = max_diff(model, result.model, x)
    assert diff <= 1e-5 and scale > 1 and len(result.folded) == 3


def test_a_failed_parity_check_writes_nothing(bn_run, tmp_path):
    class Drifting(nn.Module):  # exported (traced) graph differs from eager: a constant that changes per call
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x) + 1e-3 * self.calls

    x, _ = next(iter(bn_run.loader("test", batch_size=8)))
    out = tmp_path / "drift.pt"
    with pytest.raises(ParityError, match=r"differ .* by .*tolerance 0.0001.*nothing was written"):
        export_model(Drifting(bn_run.model()), "torchscript", out, batch=x, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_its_bad_inputs(bn_run, tmp_path):
    out = tmp_path / "m.onnx"
    proc = cnnlab("export", bn_run.path, "--format", "onnx", "--fuse-bn", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "3 BatchNorm layers folded" in proc.stdout and "max abs difference" in proc.stdout
    assert out.is_file() and (tmp_path / "m.onnx.json").is_file()
    proc = cnnlab("export", bn_run.path, "--format", "onnx", "--out", tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "is a directory" in proc.stderr
    proc = cnnlab("export", bn_run.path, "--format", "onnx", "--weights", "ema", "--out", tmp_path / "x.onnx")
    assert proc.returncode == 2 and "no ema weights" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
