"""--init weights: torchvision-format state dicts (layouts written out from torchvision's model code, see
torchvision_layouts.py) load into cnnlab's ResNet, VGG and GoogLeNet; a head of another class count is
dropped and keeps the model's own initialisation; wrapper prefixes are stripped; RGB first convs adapt to grey
input; a pickle that would run code is refused and its code never runs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torchvision_layouts import VGG_D, googlenet_layout, random_state, resnet_layout, vgg_layout

from cnnlab.errors import ConfigError
from cnnlab.models import build_model
from cnnlab.transfer.weights import head_keys, load_into, read_state_dict, select_stages


def _check_loaded(model, state, skip=()):
    got = model.state_dict()
    for key, value in state.items():
        if key not in skip:
            assert torch.equal(got[key], value.to(got[key].dtype)), key


def test_torchvision_resnet18_state_dict_loads_with_zero_missing_keys():
    layout = resnet_layout()
    assert len(layout) == 122  # torchvision's resnet18 state dict: 62 parameters + 60 BN buffers
    assert sum(torch.Size(s).numel() for k, s in layout.items() if "running" not in k and "num_batches" not in k) \
        == 11_689_512  # torchvision's published parameter count
    state = random_state(layout)
    model = build_model("resnet18")
    report = load_into(model, state, source="tv")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.head_reset == [] and len(report.loaded) == 122
    _check_loaded(model, state)


VGG_CFGS = {  # torchvision/models/vgg.py cfgs (the paper's Table 1 columns A, B, D, E)
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": VGG_D,
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
RESNET_BLOCKS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
                 "resnet50": ((3, 4, 6, 3), True), "resnet101": ((3, 4, 23, 3), True),
                 "resnet152": ((3, 8, 36, 3), True)}


def test_every_catalogue_model_has_torchvisions_exact_layout():
    """Key names and shapes of every model the catalogue loads published weights into equal torchvision's
    (built on the meta device: no memory, no init cost)."""
    from cnnlab.layers import meta_device
    from cnnlab.transfer.catalogue import CATALOGUE

    checked = []
    for name, entry in CATALOGUE.items():
        if not entry.models:
            continue
        if name.startswith("vgg"):
            layout = vgg_layout(VGG_CFGS[name.removesuffix("_bn")], batch_norm=name.endswith("_bn"))
        elif name.startswith("resnet"):
            blocks, bottleneck = RESNET_BLOCKS[name]
            layout = resnet_layout(blocks, bottleneck)
        else:
            layout = googlenet_layout()
        with meta_device():
            model = build_model(name, **{**entry.model_options, **({"aux_logits": True} if name == "googlenet"
                                                                     else {})})
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == {k: tuple(v) for k, v in layout.items()}, name
        checked.append(name)
    assert len(checked) == 14  # VGG A, B, D, E with and without BN, ResNet-18…152, GoogLeNet


def test_torchvision_vgg16_state_dict_loads_with_zero_missing_keys():
    layout = vgg_layout()
    assert len(layout) == 32  # 13 convs + 3 FC layers, weight and bias each
    state = random_state(layout, constant=True)
    from cnnlab.layers import meta_device

    with meta_device():  # the layers without their 138M-value initialisation: loading fills them all
        model = build_model("vgg16")
    model = model.to_empty(device="cpu")
    report = load_into(model, state, source="tv")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    _check_loaded(model, state)


def test_torchvision_googlenet_file_loads_with_aux_heads_and_reports_them_without():
    state = random_state(googlenet_layout(), seed=3)
    with_aux = build_model("googlenet", aux_logits=True, transform_input=True)
    report = load_into(with_aux, state, source="tv")
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    _check_loaded(with_aux, state)
    plain = build_model("googlenet")
    report = load_into(plain, state, source="tv")
    assert report.missing == [] and report.mismatched == []
    assert sorted({k.split(".")[0] for k in report.unexpected}) == ["aux1", "aux2"]
    assert "unexpected, ignored (aux1." in report.message()


def test_different_head_is_dropped_and_keeps_the_models_own_initialisation():
    state = random_state(resnet_layout(), seed=4)
    torch.manual_seed(123)
    reference = build_model("resnet18", num_classes=10)   # what a fresh model's fc looks like under this seed
    torch.manual_seed(123)
    model = build_model("resnet18", num_classes=10)
    report = load_into(model, state, source="tv")
    assert sorted(report.head_reset) == ["fc.bias", "fc.weight"]
    assert "10 classes here, 1000 in the file" in report.message()
    assert torch.equal(model.fc.weight, reference.fc.weight) and torch.equal(model.fc.bias, reference.fc.bias)
    # PyTorch's default Linear init (which ResNet keeps for fc, as torchvision does): U(-1/sqrt(512), 1/sqrt(512))
    assert model.fc.weight.abs().max() <= 512 ** -0.5 and model.fc.weight.std() > 0.01
    assert report.missing == [] and report.mismatched == []
    _check_loaded(model, state, skip=("fc.weight", "fc.bias"))
    # the same class count but other classes: dropped when asked
    same = build_model("resnet18")
    report = load_into(same, state, source="run", reset_head="other classes")
    assert sorted(report.head_reset) == ["fc.bias", "fc.weight"] and not torch.equal(same.fc.weight,
                                                                                     state["fc.weight"])


def test_vgg_head_keys_and_googlenet_aux_heads():
    assert head_keys(build_model("vgg11", input_size=32, num_classes=7)) == {"classifier.6.weight",
                                                                            "classifier.6.bias"}
    keys = head_keys(build_model("googlenet", aux_logits=True, num_classes=7))
    assert keys == {"fc.weight", "fc.bias", "aux1.fc2.weight", "aux1.fc2.bias", "aux2.fc2.weight", "aux2.fc2.bias"}


def test_module_and_orig_mod_prefixes_are_stripped(tmp_path):
    state = random_state(resnet_layout(), seed=5)
    ddp = {f"module.{k}": v for k, v in state.items()}
    compiled = {f"_orig_mod.{k}": v for k, v in state.items()}
    both = {f"module._orig_mod.{k}": v for k, v in state.items()}
    for i, variant in enumerate((ddp, compiled, both)):
        path = tmp_path / f"w{i}.pth"
        torch.save(variant, path)
        loaded = read_state_dict(path)
        assert set(loaded) == set(state)
        model = build_model("resnet18")
        assert load_into(model, loaded, source=str(path)).missing == []


def test_checkpoint_dicts_are_unwrapped_and_safetensors_read(tmp_path):
    state = random_state({"conv.weight": (8, 3, 3, 3), "bn.running_var": (8,), "fc.weight": (4, 8)}, seed=6)
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    assert set(read_state_dict(tmp_path / "ckpt.pt")) == set(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert all(torch.equal(read_state_dict(tmp_path / "w.safetensors")[k], v) for k, v in state.items())


def test_rgb_first_conv_adapts_to_grey_input_by_summing():
    state = random_state(resnet_layout(), seed=7)
    model = build_model("resnet18", in_channels=1, num_classes=10)
    report = load_into(model, state, source="tv")
    assert report.adapted == ["conv1.weight adapted from 3 to 1 input channels"]
    # a grey image replicated to RGB gives the RGB conv exactly the response of the summed kernel
    grey = torch.randn(2, 1, 9, 9)
    rgb_out = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), state["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(model.conv1(grey), rgb_out, atol=1e-5)


class _RunsCode:
    """Unpickling this calls os.system: exactly what --init must never do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    zipped, legacy = tmp_path / "evil.pth", tmp_path / "evil.pkl"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, zipped)
    with open(legacy, "wb") as fh:
        pickle.dump({"payload": _RunsCode(marker)}, fh, protocol=2)
    for path in (zipped, legacy):
        with pytest.raises(ConfigError, match="refused: loading it would run pickled code") as err:
            read_state_dict(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert "system" in str(err.value) or "opcode" in str(err.value)
    assert not marker.exists()
    from cnnlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "lenet5", "--init", str(zipped), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err and "imports posix.system" in err, err
    assert not marker.exists() and not out.exists()


def test_unreadable_and_empty_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(ConfigError, match="not a readable weights file"):
        read_state_dict(bad)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(ConfigError, match="holds no tensors"):
        read_state_dict(empty)
    with pytest.raises(ConfigError, match="none of its 2 tensors fits"):
        load_into(build_model("lenet5"), {"x.weight": torch.zeros(1), "y": torch.zeros(2)}, source="f")


def test_select_stages_keeps_the_first_n_stages_only():
    state = build_model("lenet5").state_dict()
    model = build_model("lenet5")
    picked = select_stages(state, model, ["stem", "stage1"])
    assert sorted(picked) == ["features.0.bias", "features.0.weight", "features.3.bias", "features.3.weight"]
