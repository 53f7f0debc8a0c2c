"""What the network will see: a dataset card (sizes, classes, image size, channel stats) and a PNG grid of
training samples beside the same samples augmented."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .dataset import Dataset


def default_augment_spec(ds: Dataset) -> str:
    """What `data show` previews when no --augment is given: a random crop padded by 1/8 of the side, plus a
    horizontal flip only for colour images. Grey data here is handwriting and characters (digits, MNIST,
    KMNIST, USPS), which a mirror changes (a mirrored 3 or 7 is not a digit); colour photos (CIFAR, image
    folders) keep their class when mirrored. Ask for `--augment flip` to see flips on grey data."""
    c, h, w = ds.image_shape
    crop = f"crop:{max(1, min(h, w) // 8)}"
    return f"flip,{crop}" if c == 3 else crop


def dataset_card(ds: Dataset, augment_spec: str | None = None) -> str:
    """A plain-text card: one fact per line."""
    mean, std = ds.channel_stats()
    c, h, w = ds.image_shape
    names = ", ".join(ds.classes[:12]) + (f", … ({ds.num_classes} in all)" if ds.num_classes > 12 else "")
    counts = torch.bincount(ds.train.labels, minlength=ds.num_classes)
    lines = [
        f"dataset      {ds.name}  (source: {ds.info.get('source', '?')})",
        f"image        {c}×{h}×{w} uint8" + (f"  (native {ds.info['native_size']})" if "native_size" in ds.info
                                             else ""),
        f"splits       train {len(ds.train)}  val {len(ds.val)}  test {len(ds.test)}",
        f"classes      {ds.num_classes}: {names}",
        f"per class    train min {int(counts.min())}  max {int(counts.max())}",
        f"mean         {', '.join(f'{m:.4f}' for m in mean.tolist())}  (training split, 0..1 units)",
        f"std          {', '.join(f'{s:.4f}' for s in std.tolist())}",
        f"memory       {sum(s.images.numel() for s in (ds.train, ds.val, ds.test)):,} bytes as uint8",
    ]
    if ds.info.get("skipped"):
        lines.append("skipped      " + ", ".join(f"{k} {v}" for k, v in ds.info["skipped"].items()))
    if ds.info.get("memmap"):
        lines.append(f"memmap       {ds.info['memmap']}")
    lines.append(f"augment      {augment_spec or 'none'}")
    return "\n".join(lines)


def _tile(images: torch.Tensor, cols: int, scale: int, pad: int = 2) -> torch.Tensor:
    """uint8 (N, C, H, W) → one (3, H', W') grid image, each sample upscaled `scale`× (nearest)."""
    n, c, h, w = images.shape
    x = images.expand(-1, 3, -1, -1) if c == 1 else images
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    rows = math.ceil(n / cols)
    hh, ww = h * scale + pad, w * scale + pad
    grid = torch.full((3, rows * hh + pad, cols * ww + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, pad + r * hh:pad + r * hh + h * scale, pad + k * ww:pad + k * ww + w * scale] = x[i]
    return grid


def sample_grid(ds: Dataset, augment=None, out: str | Path = "samples.png", n: int = 16, seed: int = 0,
                rounds: int = 2, spec: str | None = None) -> Path:
    """Write a PNG: left panel the first `n` training samples (classes round-robin, each tile labelled
    with its class name), right panel(s) the same samples after `rounds` independent draws of `augment`
    (titled with the augmentation `spec`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..utils.io import atomic_path

    labels = ds.train.labels
    per_class = [torch.nonzero(labels == k).flatten() for k in range(ds.num_classes)]
    picks = [int(idx[j]) for j in range(max((len(p) for p in per_class), default=0))
             for idx in per_class if j < len(idx)][:n]
    batch = ds.train.images[torch.tensor(picks, dtype=torch.long)]
    panels = [("original", batch)]
    if augment is not None:
        gen = torch.Generator().manual_seed(seed)
        panels += [(f"{spec or 'augmented'} (draw {k + 1})",
                    augment(batch, gen).round().clamp(0, 255).to(torch.uint8)) for k in range(rounds)]
    cols = math.ceil(math.sqrt(len(batch)))
    scale = max(1, 96 // max(batch.shape[2:]))
    pad = 2
    cell_h, cell_w = batch.shape[2] * scale + pad, batch.shape[3] * scale + pad
    fig = Figure(figsize=(4.2 * len(panels), 4.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, images) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(_tile(images, cols, scale, pad).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        for k, index in enumerate(picks):
            r, c = divmod(k, cols)
            ax.text(pad + c * cell_w + 2, pad + r * cell_h + 2, ds.classes[int(labels[index])], fontsize=7,
                    color="yellow", va="top", ha="left")
    fig.suptitle(f"{ds.name}: what the network sees", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
