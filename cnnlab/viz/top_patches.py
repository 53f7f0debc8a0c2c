"""Zeiler & Fergus's figure: for each of K units of a layer, the dataset patches that excite it most.

A unit here is one feature map (channel) of the layer; an image excites it by the largest value the map
takes on that image, at some position (i, j). One pass over the data keeps a running top-k per unit (each
batch's maxima merged with the best so far by torch.topk), so memory holds k entries per unit, never the
activations. The forward pass stops at the layer. The patch shown is the unit's receptive field at (i, j),
from cnnlab's analysis: rows start + i·jump … + size (start = centre − (size − 1)/2), the same for columns;
where the field reaches past the image (into the padding) the patch is blank."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..analysis import receptive_field as rfm
from ..errors import CnnlabWarning, ConfigError
from .figures import GAP_COLOUR, new_figure, save_png, show_grid, tile_grid
from .layer_select import Layer, probe_layer


class _LayerReached(Exception):
    """Raised by the hook once the layer's output is recorded: the rest of the forward pass is not needed."""


class RunningTopK:
    """The k largest values of each row seen so far, each with an integer tag (here: image index, position
    in the map), merged batch by batch: concatenate with the kept ones, torch.topk, gather the tags."""

    def __init__(self, rows: int, k: int, tag_width: int = 2):
        self.k = k
        self.values = torch.empty(rows, 0)
        self.tags = torch.empty(rows, 0, tag_width, dtype=torch.long)

    def update(self, values: torch.Tensor, tags: torch.Tensor) -> None:
        """values (rows, n), tags (rows, n, tag_width)."""
        v = torch.cat([self.values, values.float().cpu()], 1)
        t = torch.cat([self.tags, tags.cpu()], 1)
        top, idx = v.topk(min(self.k, v.shape[1]), dim=1)
        self.values = top
        self.tags = t.gather(1, idx[..., None].expand(-1, -1, t.shape[2]))


@dataclass
class TopPatches:
    """The result: for unit `units[u]`, its `top` images `images[u]` (dataset indices), the activations
    `values[u]`, the map positions `positions[u]` (row, column), and the receptive-field patches
    `patches[u]` (uint8, C×size×size) with `inside[u]` marking the pixels that lie inside the image."""

    layer: Layer
    field: rfm.ReceptiveField
    units: list[int]
    values: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    patches: torch.Tensor
    inside: torch.Tensor
    scanned: int

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.patches.shape[-2:])  # type: ignore[return-value]


def field_window(field: rfm.ReceptiveField) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """(size, jump, start) per axis of a layer's units: unit (i, j) sees rows start₀ + i·jump₀ … + size₀ − 1.
    An approximate field (uneven adaptive pooling) is its upper bound, rounded up."""
    size = tuple(int(math.ceil(s)) for s in field.size)
    start = tuple(c - (s - 1) / 2 for c, s in zip(field.centre, size))
    return size, tuple(field.jump), start  # type: ignore[return-value]


def crop_fields(images: torch.Tensor, index: torch.Tensor, positions: torch.Tensor,
                field: rfm.ReceptiveField) -> tuple[torch.Tensor, torch.Tensor]:
    """The receptive-field patches of units at `positions` (M, 2: row, column) in images `index` (M,) of
    `images` uint8 (N, C, H, W): (M, C, size_h, size_w) uint8 (0 outside the image) and the inside mask
    (M, size_h, size_w). Gathered with one indexing operation, no loop over patches."""
    (sh, sw), (jh, jw), (st_h, st_w) = field_window(field)
    _, c, h, w = images.shape
    rows = torch.round(st_h + positions[:, 0].double() * jh).long()[:, None] + torch.arange(sh)  # (M, sh)
    cols = torch.round(st_w + positions[:, 1].double() * jw).long()[:, None] + torch.arange(sw)  # (M, sw)
    ok_r, ok_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    picked = images[index.long()]  # (M, C, H, W): only the M winning images
    r = rows.clamp(0, h - 1)[:, None, :, None]
    k = cols.clamp(0, w - 1)[:, None, None, :]
    m = torch.arange(len(index))[:, None, None, None]
    ch = torch.arange(c)[None, :, None, None]
    patches = picked[m, ch, r, k]
    inside = ok_r[:, :, None] & ok_c[:, None, :]
    return patches * inside[:, None].to(patches.dtype), inside


def top_patches(model: nn.Module, layer: Layer, batches: Iterable, images: torch.Tensor, units: int | list[int] = 8,
                top: int = 9) -> TopPatches:
    """Scan `batches` (normalised inputs, or (inputs, labels) pairs, in the order of the uint8 `images` they
    were made from) once and return each unit's `top` strongest images with their receptive-field patches.
    `units`: the first K channels, or a list of channel indices."""
    c, h, w = images.shape[1:]
    probe = probe_layer(model, layer.module, (c, h, w))
    if probe.calls > 1:
        raise ConfigError(f"--layer {layer.name!r}: this module runs {probe.calls} times per image (a shared "
                          "module); choose a layer that runs once, such as a stage or a convolution")
    if probe.shape is None or len(probe.shape) != 3:
        raise ConfigError(f"--layer {layer.name!r} outputs {probe.shape}: top patches need a layer with feature "
                          "maps (a conv, pooling or stage output)")
    if probe.field.is_global or probe.field.unknown:
        why = "see the whole image" if probe.field.is_global else "have a receptive field cnnlab cannot trace"
        raise ConfigError(f"--layer {layer.name!r}: its units {why}; choose an earlier layer")
    channels = probe.shape[0]
    if isinstance(units, int) and units > channels:
        warnings.warn(f"--units {units}: layer {layer.name!r} has {channels} units; showing all {channels}",
                      CnnlabWarning, stacklevel=2)
    chosen = list(range(min(units, channels))) if isinstance(units, int) else list(units)
    if not chosen or max(chosen) >= channels or min(chosen) < 0:
        raise ConfigError(f"--units: layer {layer.name!r} has {channels} units (channels 0-{channels - 1})")
    sel = torch.tensor(chosen)
    best = RunningTopK(len(chosen), top)
    offset = 0

    def hook(module, inputs, output):
        acts = output[:, sel.to(output.device)].flatten(2)  # (N, K, H*W)
        values, where = acts.max(2)  # the strongest position of each map in each image
        n = values.shape[0]
        index = torch.arange(offset, offset + n, device=values.device).expand(len(chosen), n)
        best.update(values.T, torch.stack([index, where.T], 2))
        raise _LayerReached

    handle = layer.module.register_forward_hook(hook)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                try:
                    model(x)
                except _LayerReached:
                    pass
                offset += len(x)
    finally:
        handle.remove()
        model.train(training)
    if offset != len(images):
        raise ConfigError(f"the batches held {offset} images but {len(images)} uint8 images were given")
    map_w = probe.shape[2]
    flat = best.tags.reshape(-1, 2)
    positions = torch.stack([flat[:, 1] // map_w, flat[:, 1] % map_w], 1)
    patches, inside = crop_fields(images, flat[:, 0], positions, probe.field)
    k, t = best.values.shape
    return TopPatches(layer, probe.field, chosen, best.values, best.tags[..., 0], positions.reshape(k, t, 2),
                      patches.reshape(k, t, *patches.shape[1:]), inside.reshape(k, t, *inside.shape[1:]), offset)


def draw_top_patches(tp: TopPatches, source: str = ""):
    """Rows = units, columns = their strongest patches, each with its activation; blank = outside the image."""
    k, t = tp.values.shape
    c, sh, sw = tp.patches.shape[2:]
    pix = tp.patches.float() / 255.0
    if c == 1:
        tiles = torch.where(tp.inside, pix[:, :, 0], torch.nan).reshape(k * t, sh, sw).numpy()
    else:
        tiles = pix[:, :, :3].permute(0, 1, 3, 4, 2).reshape(k * t, sh, sw, 3).numpy()
    gap = max(1, sh // 8)
    grid = tile_grid(tiles, cols=t, gap=gap)
    if c != 1:  # transparent outside the image (and between tiles, where the inside grid is NaN)
        grid[..., 3] = np.nan_to_num(tile_grid(tp.inside.reshape(k * t, sh, sw).float().numpy(), cols=t, gap=gap))
    gh, gw = grid.shape[:2]
    scale = min(10.0 / gw, 9.0 / gh, 0.25)
    fig = new_figure(max(6.0, gw * scale + 2.4), max(3.0, gh * scale + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    im = show_grid(ax, grid, cmap="gray", vmin=0, vmax=1)
    if c == 1:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pixel value (0–1); blank: outside the image")
    ax.set_yticks([u * (sh + gap) + (sh - 1) / 2 for u in range(k)], [f"unit {u}" for u in tp.units])
    ax.set_xticks([j * (sw + gap) + (sw - 1) / 2 for j in range(t)], [f"#{j + 1}" for j in range(t)])
    ax.tick_params(labelsize=7, length=0)
    for u in range(k):
        for j in range(t):
            ax.text(j * (sw + gap), u * (sh + gap) + sh - 1, _value(float(tp.values[u, j])), fontsize=6,
                    color="#b3470a", va="bottom", ha="left",
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})
    approx = " (upper bound)" if tp.field.approx else ""
    ax.set_title(f"{tp.layer.name} ({tp.layer.kind}): the {t} patches of {tp.scanned} {source}images that excite "
                 f"each unit most\nreceptive field {sh}×{sw}{approx}, jump {_num(tp.field.jump[0])}; number = "
                 "the unit's activation", fontsize=9)
    ax.set_xlabel("rank (strongest first)", fontsize=8)
    ax.set_facecolor(GAP_COLOUR)
    fig.tight_layout()
    return fig


def _value(v: float) -> str:
    """An activation with three decimals (tanh units saturate near 1: 0.999 and 1.000 differ)."""
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.3g}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def plot_top_patches(cfg) -> tuple[Path, TopPatches]:
    """`cnnlab viz top-patches`: RUN/viz/top-patches-<layer>.png over --split of --data (the run's own data
    by default)."""
    from ..runs import Run, viz_path
    from .layer_select import resolve_layer

    cfg.validate()
    run = Run.open(cfg.run)
    model = run.model(cfg.weights)
    layer = resolve_layer(model, cfg.layer)
    dataset = run.dataset(cfg.data)
    split = getattr(dataset, cfg.split)
    if len(split) == 0:
        raise ConfigError(f"--split {cfg.split}: the data's {cfg.split} split is empty")
    loader = run.loader(cfg.split, dataset=dataset, batch_size=cfg.batch_size)
    tp = top_patches(model, layer, loader, split.images, cfg.units, cfg.top)
    out = Path(cfg.out) if cfg.out else viz_path(run.path, "top-patches", layer.name)
    return save_png(draw_top_patches(tp, f"{cfg.split} "), out), tp
