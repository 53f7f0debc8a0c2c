"""The lectures' "Model Zoo": ImageNet weights torchvision publishes, as facts (URL, SHA-256 prefix, the
preprocessing they expect), for the cnnlab architectures whose parameter layout is torchvision's.

Every URL below is torchvision's `IMAGENET1K_V1` weights URL as written in pytorch/vision's source
(torchvision/models/vgg.py, resnet.py, googlenet.py, alexnet.py); the hex digits before ".pth" are the first
digits of the file's SHA-256, which torch.hub (and cnnlab) check after downloading. V1 is the paper-era
recipe; the later V2 ResNet weights expect a 232 resize and are not listed. These files could not be fetched
on the machines cnnlab was developed on: the download path is tested against a local server.

Pure data, no torch import: `cnnlab train --help` and config validation read it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

BASE_URL = "https://download.pytorch.org/models/"
MIRROR_ENV = "CNNLAB_WEIGHTS_MIRROR"  # a base URL that serves the same file names (an internal mirror)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREFIX = "torchvision:"


@dataclass(frozen=True)
class Preprocessing:
    """What published weights expect: images resized (shorter side) to `resize`, centre-cropped to `crop`,
    RGB, normalised with `mean`/`std` (in [0, 1] units) — torchvision's ImageClassification preset."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    def normalisation(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for `channels` input channels: the RGB values, or their average for grey input
        (whose first conv is adapted by summing its RGB kernels)."""
        if channels == len(self.mean):
            return self.mean, self.std
        if channels == 1:
            return (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
        raise ConfigError(f"published weights expect {len(self.mean)}-channel images, not {channels}")


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file: `name` (torchvision's builder name), the cnnlab `models` it loads into
    unchanged, the model options it needs, and why it does not fit when `models` is empty."""

    name: str
    file: str
    models: tuple[str, ...]
    preprocessing: Preprocessing = Preprocessing()
    model_options: dict = field(default_factory=dict)
    note: str = ""

    @property
    def url(self) -> str:
        base = os.environ.get(MIRROR_ENV) or BASE_URL
        return base.rstrip("/") + "/" + self.file

    @property
    def sha256_prefix(self) -> str:
        """The hex digits torchvision puts before ".pth": the leading digits of the file's SHA-256."""
        return re.search(r"-([0-9a-f]+)\.pth$", self.file).group(1)


def _entries() -> dict[str, PublishedWeights]:
    files = {
        # torchvision/models/vgg.py, VGG*_Weights.IMAGENET1K_V1
        "vgg11": "vgg11-8a719046.pth", "vgg13": "vgg13-19584684.pth", "vgg16": "vgg16-397923af.pth",
        "vgg19": "vgg19-dcbb9e9d.pth", "vgg11_bn": "vgg11_bn-6002323d.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth",
        "vgg16_bn": "vgg16_bn-6c64b313.pth", "vgg19_bn": "vgg19_bn-c79401a0.pth",
        # torchvision/models/resnet.py, ResNet*_Weights.IMAGENET1K_V1
        "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth",
        "resnet50": "resnet50-0676ba61.pth", "resnet101": "resnet101-63fe2227.pth",
        "resnet152": "resnet152-394f9c45.pth",
    }
    entries = {name: PublishedWeights(name, file, (name,)) for name, file in files.items()}
    # torchvision/models/googlenet.py, GoogLeNet_Weights.IMAGENET1K_V1 (ported from TensorFlow: expects the
    # [-1, 1] rescaling that transform_input applies; the file also holds the auxiliary heads).
    entries["googlenet"] = PublishedWeights("googlenet", "googlenet-1378be20.pth", ("googlenet",),
                                            model_options={"transform_input": True})
    # torchvision/models/alexnet.py, AlexNet_Weights.IMAGENET1K_V1
    entries["alexnet"] = PublishedWeights(
        "alexnet", "alexnet-owt-7be5be79.pth", (),
        note="torchvision's AlexNet is the 64-192-384-256-256 'one weird trick' variant; cnnlab's alexnet is the "
             "paper's 96-256-384-384-256 single tower, so its convolutions do not fit (only the FC layers would)")
    return entries


CATALOGUE: dict[str, PublishedWeights] = _entries()


def is_catalogue_spec(spec: str) -> bool:
    """Whether --init names published weights (`imagenet` or `torchvision:NAME`) rather than a file/URL."""
    return spec == "imagenet" or spec.startswith(PREFIX)


def lookup(spec: str, model: str) -> PublishedWeights:
    """The published weights --init `spec` names for `model`; ConfigError (one line) when there are none or
    they do not fit the model."""
    if spec == "imagenet":
        entry = CATALOGUE.get(model)
        if entry is None:
            have = ", ".join(n for n, e in CATALOGUE.items() if e.models)
            raise ConfigError(f"--init imagenet: no published ImageNet weights for {model!r}; available for: {have}")
    else:
        name = spec[len(PREFIX):]
        entry = CATALOGUE.get(name)
        if entry is None:
            raise ConfigError(f"--init {spec}: unknown; published weights: "
                              f"{', '.join(PREFIX + n for n in CATALOGUE)}")
    if model not in entry.models:
        why = entry.note or f"they are for {', '.join(entry.models)}"
        raise ConfigError(f"--init {spec}: torchvision's {entry.name} weights do not fit cnnlab's {model!r}: {why}")
    return entry
