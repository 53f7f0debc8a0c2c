"""What filters did the network learn? A convolution's kernels as one image grid (Krizhevsky et al.'s and
Zeiler & Fergus's first-layer figure): RGB tiles for a 3-channel first layer, otherwise one greyscale tile per
(filter, input channel) kernel. Each filter is normalised on its own, so weak and strong filters are both
visible."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .figures import new_figure, save_png, show_grid, tile_grid
from .layer_select import conv_layers, conv_of


@dataclass
class FilterGrid:
    """The picture of one conv layer's kernels.

    `weight` the kernels drawn (filters, channels, kh, kw); `grid` the image shown: greyscale values in
    [-1, 1] (weight ÷ the largest |weight| of its filter) with NaN gaps, or RGBA (each filter min-max scaled
    to [0, 1], transparent gaps); `tiles` the number of kernel tiles; `cols` tiles per grid row."""

    layer: str
    kind: str
    weight: torch.Tensor
    rgb: bool
    grid: np.ndarray
    tiles: int
    cols: int
    total_filters: int
    total_channels: int

    @property
    def title(self) -> str:
        f, c, kh, kw = self.weight.shape
        shown = ""
        if f < self.total_filters or (not self.rgb and c < self.total_channels):
            shown = f" (first {f} filters" + ("" if self.rgb or c == self.total_channels else
                                              f" × first {c} channels") + ")"
        return (f"{self.layer} ({self.kind}): {self.total_filters} filters of {self.total_channels}×{kh}×{kw}"
                f"{shown}")


def filter_grid(model: nn.Module, layer: str | None = None, max_filters: int = 64,
                max_channels: int = 16) -> FilterGrid:
    """The kernels of conv `layer` (a conv module path or a stage name: its first convolution; default: the
    model's first convolution). A first layer with 3 input channels is drawn in colour, one tile per filter;
    any other conv gets one greyscale tile per kernel: rows are filters, columns input channels (a single
    input channel: filters in a square grid)."""
    conv = conv_of(model, layer)
    w = conv.module.weight.detach().float().cpu()
    total_f, total_c = w.shape[:2]
    first = conv.path == conv_layers(model)[0][0]
    rgb = first and total_c == 3 and conv.module.groups == 1
    w = w[:max_filters]
    if rgb:
        lo = w.amin(dim=(1, 2, 3), keepdim=True)
        hi = w.amax(dim=(1, 2, 3), keepdim=True)
        tiles = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1)  # (F, kh, kw, RGB)
        cols = None
        grid = tile_grid(tiles.numpy(), cols)
        n = len(w)
    else:
        scale = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # per filter, all its channels
        w = w[:, :max_channels]
        tiles = (w / scale).reshape(-1, *w.shape[2:])  # filter-major: row f holds filter f's channels
        cols = None if w.shape[1] == 1 else w.shape[1]
        grid = tile_grid(tiles.numpy(), cols)
        n = len(tiles)
    from .figures import grid_shape

    return FilterGrid(conv.name, conv.kind, w, rgb, grid, n, grid_shape(n, cols)[1], total_f, total_c)


def draw_filters(fg: FilterGrid):
    """The grid as a figure: title, axes naming what rows/columns are, a colour bar for greyscale kernels."""
    gh, gw = fg.grid.shape[:2]
    scale = min(0.22, 7.0 / max(gw, 1), 9.0 / max(gh, 1))  # inches per kernel pixel
    fig = new_figure(max(4.5, gw * scale + 2.2), max(3.0, gh * scale + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    f, c, kh, kw = fg.weight.shape
    if fg.rgb:
        show_grid(ax, fg.grid)
        ax.set_xlabel(f"filters 0–{f - 1}, left to right then down; each filter's weights min–max scaled "
                      "(over its three colours) to 0–1", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        _number_tiles(ax, f, fg.cols, kh, kw)
    else:
        im = show_grid(ax, fg.grid, cmap="gray", vmin=-1, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight ÷ largest |weight| of its filter")
        if c == 1:
            ax.set_xlabel(f"filters 0–{f - 1}, left to right then down", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            _number_tiles(ax, f, fg.cols, kh, kw)
        else:
            _centre_ticks(ax.set_xticks, c, kw, "input channel")
            _centre_ticks(ax.set_yticks, f, kh, "filter")
            ax.set_xlabel("input channel", fontsize=8)
            ax.set_ylabel("filter", fontsize=8)
            ax.tick_params(labelsize=7)
    ax.set_title(fg.title, fontsize=9)
    fig.tight_layout()
    return fig


def _number_tiles(ax, n: int, cols: int, kh: int, kw: int) -> None:
    """Each tile's filter index in its top-left corner (up to 64 tiles; more would hide the kernels)."""
    if n > 64:
        return
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(c * (kw + 1) - 0.45, r * (kh + 1) - 0.45, str(i), fontsize=7, color="#b3470a", va="top",
                ha="left", bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})


def _centre_ticks(setter, count: int, size: int, _label: str) -> None:
    """Ticks at the centre of every tile (every k-th one when there are many)."""
    step = max(1, count // 16)
    idx = list(range(0, count, step))
    setter([i * (size + 1) + (size - 1) / 2 for i in idx], [str(i) for i in idx])


def plot_filters(cfg) -> tuple[Path, FilterGrid]:
    """`cnnlab viz filters`: draw the run's filters to cfg.out (default RUN/viz/filters-<layer>.png)."""
    from ..runs import Run, viz_path

    cfg.validate()
    run = Run.open(cfg.run)
    model = run.model(cfg.weights)
    fg = filter_grid(model, cfg.layer, cfg.max_filters, cfg.max_channels)
    out = Path(cfg.out) if cfg.out else viz_path(run.path, "filters", fg.layer)
    return save_png(draw_filters(fg), out), fg
