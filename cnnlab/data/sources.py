"""Dataset sources behind `--data`: each decodes once into a uint8 Dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .dataset import Dataset, Split
from .splits import stratified_split

SOURCES = ("digits",)


def load_digits(image_size: int | tuple[int, int] | None = 32, seed: int = 0,
                fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 images with 17 grey levels (0-16),
    rescaled to 0-255 and resized (bilinear) to `image_size` (32×32 by default, as LeNet-5 expects)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) * (255.0 / 16.0)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if size != (8, 8):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    tr, va, te = stratified_split(labels, fractions, seed)
    return Dataset("digits", [str(i) for i in range(10)],
                   Split(images[tr], labels[tr]), Split(images[va], labels[va]), Split(images[te], labels[te]),
                   info={"source": "sklearn.datasets.load_digits", "native_size": (8, 8)})


def load_dataset(name: str, *, image_size: int | tuple[int, int] | None = None, seed: int = 0,
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), **kwargs) -> Dataset:
    """Load a dataset by name (see SOURCES) or path."""
    if name == "digits":
        return load_digits(32 if image_size is None else image_size, seed=seed, fractions=fractions)
    raise ConfigError(f"unknown data {name!r}; known: {', '.join(SOURCES)} or a path")
