"""matplotlib on its headless Agg canvas (no pyplot, no display, no global state): figures, image grids with
visible gaps between tiles, colour bars, and PNGs written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

GAP_COLOUR = "#e9edf1"  # the background between tiles and outside an image


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure on an Agg canvas (usable in any thread, no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(fig, path: str | Path, option: str = "--out") -> Path:
    """Write the figure to `path` atomically (missing folders made); a one-line error when it cannot be."""
    from ..utils.io import write_bytes_atomic

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name such as {path / 'picture.png'}")
    data = png_bytes(fig)
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    return path


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) for n tiles: `cols` given, else as square as possible."""
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def tile_grid(tiles: np.ndarray, cols: int | None = None, gap: int = 1) -> np.ndarray:
    """N tiles (N, h, w) of floats, or (N, h, w, 3) RGB in [0, 1], in one picture with `gap` pixels between
    them. Gaps and empty cells are NaN (greyscale; drawn in GAP_COLOUR by `show_grid`) or transparent (RGB:
    an RGBA picture), so every tile stands alone."""
    n, h, w = tiles.shape[:3]
    rows, cols = grid_shape(n, cols)
    rgb = tiles.ndim == 4
    shape = (rows * (h + gap) - gap, cols * (w + gap) - gap) + ((4,) if rgb else ())
    grid = np.zeros(shape, dtype=np.float64) if rgb else np.full(shape, np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        if rgb:
            grid[y:y + h, x:x + w, :3] = tiles[i]
            grid[y:y + h, x:x + w, 3] = 1.0
        else:
            grid[y:y + h, x:x + w] = tiles[i]
    return grid


def show_grid(ax, grid: np.ndarray, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None):
    """imshow a tile grid (NaN / transparent gaps in GAP_COLOUR), pixels as squares; returns the image."""
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad=GAP_COLOUR)
    ax.set_facecolor(GAP_COLOUR)
    im = ax.imshow(grid, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    return im


def display_pixels(pixels: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) → what imshow takes: (H, W) for grey, (H, W, 3) for RGB, floats in [0, 1]."""
    arr = pixels.detach().cpu().float().numpy() / 255.0
    return arr[0] if arr.shape[0] == 1 else arr[:3].transpose(1, 2, 0)


def show_image(ax, pixels: torch.Tensor, title: str, colorbar: bool = True):
    """One input image with pixel axes and a title; greyscale images get a colour bar of pixel values."""
    img = display_pixels(pixels)
    if img.ndim == 2:
        im = ax.imshow(img * 255.0, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if colorbar:
            ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pixel value")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    pixel_axes(ax)


def overlay(ax, pixels: torch.Tensor, heat: np.ndarray, title: str, cmap: str = "jet", vmin=None, vmax=None,
            label: str = ""):
    """The image in grey with a half-transparent heat map over it, and the heat map's colour bar."""
    img = display_pixels(pixels)
    grey = img if img.ndim == 2 else img.mean(axis=2)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(heat, cmap=cmap, alpha=0.5, vmin=vmin, vmax=vmax, interpolation="bilinear")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_title(title, fontsize=9)
    pixel_axes(ax)


def pixel_axes(ax) -> None:
    """Axes in input pixels, labelled, with few ticks (the lectures' (row, column) convention)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.set_xlabel("column (pixel)", fontsize=8)
    ax.set_ylabel("row (pixel)", fontsize=8)
    ax.tick_params(labelsize=7)
