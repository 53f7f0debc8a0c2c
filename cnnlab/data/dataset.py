"""The in-memory dataset every source decodes into: uint8 N×C×H×W images, int64 labels, fixed classes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError


@dataclass
class Split:
    """One split held as uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass
class Dataset:
    """A dataset's train/val/test splits with its class names (index = label)."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every split must hold images of one size: a test split of another size would fail only when the
        run is scored, after all its training (the sources resize all splits alike when asked to)."""
        shape = self.train.image_shape
        for name in ("val", "test"):
            other = getattr(self, name).image_shape
            if other != shape:
                raise DataError(f"{self.name}: the {name} images are {'x'.join(map(str, other))} (CxHxW) but the "
                                f"training images {'x'.join(map(str, shape))}; give --image-size (and --channels) "
                                f"to bring all splits to one size")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training split, in [0, 1] units (float64 accumulation,
        chunked so no float copy of the whole set is made)."""
        imgs = self.train.images
        c = imgs.shape[1]
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        count = 0
        for start in range(0, len(imgs), 4096):
            chunk = imgs[start:start + 4096].to(torch.float64) / 255.0
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += (chunk * chunk).sum(dim=(0, 2, 3))
            count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        mean = total / max(count, 1)
        std = (total_sq / max(count, 1) - mean * mean).clamp_min(1e-12).sqrt()
        return mean.float(), std.float()
