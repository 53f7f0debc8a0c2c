"""One typed configuration per `cnnlab viz` command and for `cnnlab report`: what the CLI parsed, checked
before any work starts. Kept free of torch imports so that `cnnlab --help` stays fast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

SPLITS = ("train", "val", "test")
SALIENCY_METHODS = ("gradient", "integrated-gradients")
IMAGE_SPEC = re.compile(r"(train|val|test):(\d+)")


def check_image_spec(text: str) -> str:
    """IMAGE as typed: an existing file, or SPLIT:INDEX. (Decoding waits until the run says how.)"""
    path = Path(text)
    if path.is_file() or IMAGE_SPEC.fullmatch(text):
        return text
    if path.is_dir():
        raise ConfigError(f"IMAGE {text}: is a directory; give one image file, or SPLIT:INDEX such as test:0")
    raise ConfigError(f"IMAGE {text}: no such file (give an image file, or SPLIT:INDEX of the run's own data "
                      "such as test:0)")


def _positive(option: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")


def _weights(value: str) -> None:
    if not (value in ("final", "best", "raw", "ema") or re.fullmatch(r"snapshot:\d+", value)):
        raise ConfigError(f"--weights {value!r}: expected final, best, raw, ema or snapshot:K")


@dataclass
class FiltersConfig:
    """`cnnlab viz filters RUN_DIR [--layer NAME]`: a conv layer's kernels as an image grid."""

    run: str
    layer: str | None = None  # a stage name or module path; default: the first convolution
    weights: str = "final"
    max_filters: int = 64
    max_channels: int = 16
    out: str | None = None  # default RUN/viz/filters-<layer>.png

    def validate(self) -> "FiltersConfig":
        _weights(self.weights)
        _positive("--max-filters", self.max_filters)
        _positive("--max-channels", self.max_channels)
        return self


@dataclass
class ActivationsConfig:
    """`cnnlab viz activations RUN_DIR IMAGE [--layers ...]`: the feature maps each layer makes of one image."""

    run: str
    image: str  # an image file, or SPLIT:INDEX of the run's own data (test:0)
    layers: list[str] | None = None  # stage names / module paths / "stages"; default: every conv and pool layer
    weights: str = "final"
    max_maps: int = 64
    out_dir: str | None = None  # default RUN/viz

    def validate(self) -> "ActivationsConfig":
        check_image_spec(self.image)
        _weights(self.weights)
        _positive("--max-maps", self.max_maps)
        return self


@dataclass
class TopPatchesConfig:
    """`cnnlab viz top-patches RUN_DIR --layer NAME [--data DATA] [--units K]`: Zeiler & Fergus's figure."""

    run: str
    layer: str
    data: str | None = None  # default: the run's own data
    split: str = "val"
    units: int = 8
    top: int = 9
    weights: str = "final"
    batch_size: int = 256
    out: str | None = None  # default RUN/viz/top-patches-<layer>.png

    def validate(self) -> "TopPatchesConfig":
        _weights(self.weights)
        for option, value in (("--units", self.units), ("--top", self.top), ("--batch-size", self.batch_size)):
            _positive(option, value)
        if self.split not in SPLITS:
            raise ConfigError(f"--split {self.split!r}: expected train, val or test")
        return self


@dataclass
class OcclusionConfig:
    """`cnnlab viz occlusion RUN_DIR IMAGE [--patch 8 --stride 4]`: the class probability as a grey square
    slides over the image."""

    run: str
    image: str
    patch: int = 8
    stride: int = 4
    target: str | None = None  # class name or index; default: the true class (else the predicted one)
    grey: float = 0.5  # the square's value in [0, 1] pixel units
    weights: str = "final"
    batch_size: int = 64
    out: str | None = None  # default RUN/viz/occlusion-<image>.png

    def validate(self) -> "OcclusionConfig":
        check_image_spec(self.image)
        _weights(self.weights)
        for option, value in (("--patch", self.patch), ("--stride", self.stride), ("--batch-size", self.batch_size)):
            _positive(option, value)
        if not 0.0 <= self.grey <= 1.0:
            raise ConfigError(f"--grey must be in [0, 1] (pixel value as a fraction of white), got {self.grey}")
        return self


@dataclass
class GradCamConfig:
    """`cnnlab viz gradcam RUN_DIR IMAGE [--layer NAME] [--class C]`."""

    run: str
    image: str
    layer: str | None = None  # default: the last stage before the head
    target: str | None = None  # default: the predicted class
    weights: str = "final"
    out: str | None = None  # default RUN/viz/gradcam-<image>-<layer>.png

    def validate(self) -> "GradCamConfig":
        check_image_spec(self.image)
        _weights(self.weights)
        return self


@dataclass
class SaliencyConfig:
    """`cnnlab viz saliency RUN_DIR IMAGE [--method gradient|integrated-gradients]`: per-pixel attributions."""

    run: str
    image: str
    method: str = "gradient"
    target: str | None = None
    steps: int = 32  # integrated gradients: points on the path from the black image
    weights: str = "final"
    out: str | None = None  # default RUN/viz/saliency-<image>-<method>.png

    def validate(self) -> "SaliencyConfig":
        check_image_spec(self.image)
        _weights(self.weights)
        _positive("--steps", self.steps)
        if self.method not in SALIENCY_METHODS:
            raise ConfigError(f"--method {self.method!r}: expected {' or '.join(SALIENCY_METHODS)}")
        return self


@dataclass
class CurvesConfig:
    """`cnnlab viz curves RUN_DIR [RUN_DIR ...]`: loss, accuracy and learning rate per epoch, runs compared."""

    runs: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    out: str | None = None  # default FIRST_RUN/viz/curves.png

    def validate(self) -> "CurvesConfig":
        if not self.runs:
            raise ConfigError("give at least one RUN_DIR")
        if self.labels is not None and len(self.labels) != len(self.runs):
            raise ConfigError(f"--labels gives {len(self.labels)} names for {len(self.runs)} runs")
        return self


@dataclass
class ReportConfig:
    """`cnnlab report RUN_DIR`: the run's self-contained HTML page."""

    run: str
    image: str = "test:0"  # the Grad-CAM and occlusion example
    weights: str = "final"
    out: str | None = None  # default RUN/report.html

    def validate(self) -> "ReportConfig":
        check_image_spec(self.image)
        _weights(self.weights)
        return self
