"""Published weights (--init imagenet / torchvision:NAME) and URLs, end to end against a local HTTP server on
127.0.0.1 serving generated files with torchvision's key names and shapes. The real download.pytorch.org
files are never fetched here; their SHA-256 prefixes are checked, so a generated file under the real name is
refused and a test that needs a file to pass uses a catalogue entry patched to that file's own prefix."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import pytest
import torch
from local_http import serve
from torchvision_layouts import random_state, resnet_layout

from cnnlab.cli import main
from cnnlab.transfer import catalogue


@pytest.fixture
def server(tmp_path, monkeypatch):
    with serve() as (base, handler):
        monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
        monkeypatch.setenv(catalogue.MIRROR_ENV, base + "models/")
        yield base, handler


def _torch_bytes(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


TRAIN = ["--image-size", "32", "--limit-per-class", "3", "--epochs", "1", "--batch-size", "16", "--threads", "1",
         "--quiet"]


def test_catalogue_facts():
    assert catalogue.CATALOGUE["resnet18"].file == "resnet18-f37072fd.pth"
    assert catalogue.CATALOGUE["vgg16"].sha256_prefix == "397923af"
    assert catalogue.CATALOGUE["googlenet"].model_options == {"transform_input": True}
    assert catalogue.lookup("torchvision:vgg11_bn", "vgg11_bn").file == "vgg11_bn-6002323d.pth"


def test_generated_file_under_the_real_name_fails_the_sha256_prefix_and_nothing_is_kept(server, tmp_path, capsys):
    base, h = server
    h.files["models/resnet18-f37072fd.pth"] = _torch_bytes(random_state(resnet_layout()))
    out = tmp_path / "run"
    assert main(["train", "resnet18", "--init", "imagenet", "--out", str(out), *TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected it to start with f37072fd; nothing was kept" in err, err
    assert h.log == ["models/resnet18-f37072fd.pth"] and not out.exists()
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]


def test_imagenet_init_downloads_once_verifies_and_loads_with_its_preprocessing(server, tmp_path, capsys,
                                                                                monkeypatch):
    base, h = server
    body = _torch_bytes(random_state(resnet_layout(), seed=1))
    prefix = hashlib.sha256(body).hexdigest()[:8]
    entry = dataclasses.replace(catalogue.CATALOGUE["resnet18"], file=f"resnet18-{prefix}.pth")
    monkeypatch.setitem(catalogue.CATALOGUE, "resnet18", entry)
    h.files[f"models/resnet18-{prefix}.pth"] = body
    out = tmp_path / "run"
    assert main(["train", "resnet18", "--init", "imagenet", "--out", str(out), *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "--init imagenet: loaded 120 of 122 tensors; head fc.weight, fc.bias re-initialised (10 classes here, " \
           "1000 in the file)" in err, err
    assert "at --image-size 32, RGB, normalised with ImageNet mean/std" in err
    info = json.loads((out / "config.json").read_text())
    assert info["in_channels"] == 3 and info["mean"] == pytest.approx(catalogue.IMAGENET_MEAN)
    assert info["std"] == pytest.approx(catalogue.IMAGENET_STD)
    result = json.loads((out / "result.json").read_text())
    assert result["init"]["loaded"] == 120 and result["init"]["missing"] == []
    assert (tmp_path / "home" / "weights" / f"resnet18-{prefix}.pth").read_bytes() == body
    assert len(h.log) == 1
    # cached: a second run makes no request, also with --offline
    assert main(["train", "resnet18", "--init", "torchvision:resnet18", "--offline", "--out", str(tmp_path / "b"),
                 *TRAIN]) == 0
    assert len(h.log) == 1


def test_published_preprocessing_is_a_224_centre_crop_of_a_256_resize():
    from cnnlab.data import load_dataset
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.finetune import with_published_options
    from cnnlab.train.run import load_data

    ds = load_data(TrainConfig(model="resnet18", init="imagenet", limit_per_class=5).validate())
    assert ds.image_shape == (3, 224, 224)
    full = load_dataset("digits", image_size=256, channels=3, limit_per_class=5)
    for split in ("train", "val", "test"):
        assert len(getattr(ds, split)) >= 10  # 3 / 1 / 1 per class
        assert torch.equal(getattr(ds, split).images, getattr(full, split).images[:, :, 16:240, 16:240])
    own = load_data(TrainConfig(model="resnet18", init="imagenet", image_size=64, limit_per_class=2).validate())
    assert own.image_shape == (3, 64, 64)
    cfg, note = with_published_options(TrainConfig(model="googlenet", init="imagenet").validate())
    assert cfg.model_opts == {"transform_input": True} and "transform_input=True" in note


def test_url_init_with_sha256_full_or_prefix_and_mismatch(server, tmp_path, capsys):
    base, h = server
    torch.manual_seed(0)
    from cnnlab.models import build_model

    body = _torch_bytes(build_model("lenet5").state_dict())
    digest = hashlib.sha256(body).hexdigest()
    h.files["w/lenet.pth"] = body
    url = base + "w/lenet.pth"
    common = ["--epochs", "1", "--limit-per-class", "3", "--threads", "1", "--quiet"]
    assert main(["train", "--init", url, "--init-sha256", "0" * 64, "--out", str(tmp_path / "bad"), *common]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert main(["train", "--init", url, "--init-sha256", digest[:10], "--out", str(tmp_path / "a"), *common]) == 0
    assert "loaded 10 of 10 tensors" in capsys.readouterr().err
    assert main(["train", "--init", url, "--init-sha256", digest, "--out", str(tmp_path / "b"), *common]) == 0
    assert h.log.count("w/lenet.pth") == 2  # the mismatch and the first good download; then the cache
    assert main(["train", "--init", url, "--init-sha256", "1" * 12, "--offline", "--out", str(tmp_path / "c"),
                 *common]) == 2
    assert "does not match SHA-256" in capsys.readouterr().err
