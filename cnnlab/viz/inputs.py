"""One input image for a picture, prepared exactly as the run's own images were: an image file decoded and
resized by the run's policy (cnnlab.data.folder.decode_image) and padded, or `SPLIT:INDEX` of the run's
dataset (`test:0`); then normalised with the run's mean and std."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from .config import IMAGE_SPEC, check_image_spec


@dataclass
class ViewImage:
    """An image as the model sees it: `pixels` uint8 (C, H, W) after resizing and padding, `tensor` the
    normalised (1, C, H, W) float input, `label` its class index when known, `name` a file-name-safe tag."""

    pixels: torch.Tensor
    tensor: torch.Tensor
    label: int | None
    name: str
    source: str


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) → float, (x/255 - mean)/std per channel, as the run's loaders do."""
    c = pixels.shape[1]
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def load_image(run, spec: str, dataset=None) -> ViewImage:
    """The image `spec` names (see check_image_spec), prepared for `run`'s model. A file inside a folder
    named after one of the run's classes (ROOT/<class>/<image>) takes that class as its true label."""
    from ..data.folder import decode_image

    spec = check_image_spec(spec)
    pre = run.preprocess
    match = IMAGE_SPEC.fullmatch(spec) if not Path(spec).is_file() else None
    if match:
        split_name, index = match.group(1), int(match.group(2))
        dataset = run.dataset() if dataset is None else dataset
        split = getattr(dataset, split_name)
        if index >= len(split):
            raise ConfigError(f"IMAGE {spec}: the run's {split_name} split holds {len(split)} images "
                              f"(indices 0-{len(split) - 1})")
        pixels = split.images[index].clone()
        label = int(split.labels[index])
        name, source = f"{split_name}-{index}", f"{split_name} image {index} of {run.config.data}"
    else:
        path = Path(spec)
        h, w = pre.image_size
        size = (h - 2 * pre.pad, w - 2 * pre.pad)
        arr = decode_image(path, pre.channels, size, pre.resize)  # DataError (one line) for a bad file
        pixels = torch.from_numpy(arr.copy())
        if pre.pad:
            pixels = torch.nn.functional.pad(pixels, (pre.pad,) * 4)
        classes = run.classes
        label = classes.index(path.parent.name) if path.parent.name in classes else None
        name, source = _safe(path.stem), str(path)
    if tuple(pixels.shape) != (pre.channels, *pre.image_size):
        raise ConfigError(f"IMAGE {spec}: prepared as {tuple(pixels.shape)}, but the run's model takes "
                          f"{(pre.channels, *pre.image_size)}")
    return ViewImage(pixels, normalise(pixels[None], pre.mean, pre.std), label, name, source)


def _safe(text: str) -> str:
    """A file-name-safe tag (letters, digits, '.', '_', '-')."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def resolve_class(run_classes: list[str], target: str | None, option: str = "--class") -> int | None:
    """--class as a class name (first) or an index; None stays None (the command's default)."""
    if target is None:
        return None
    if target in run_classes:
        return run_classes.index(target)
    try:
        index = int(target)
    except ValueError:
        index = -1
    if 0 <= index < len(run_classes):
        return index
    shown = ", ".join(run_classes[:12]) + (", …" if len(run_classes) > 12 else "")
    raise ConfigError(f"{option} {target!r}: not a class of this run ({shown}) nor an index 0-{len(run_classes) - 1}")
