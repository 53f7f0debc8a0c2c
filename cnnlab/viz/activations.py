"""The feature maps one image produces, layer by layer (the lectures' digit passing through LeNet): forward
hooks on the chosen layers, each output copied as it is made (a later in-place ReLU would otherwise rewrite
it), the hooks removed afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .figures import new_figure, save_png, show_grid, show_image, tile_grid
from .layer_select import Layer, map_layers, resolve_layer, stage_names


@dataclass
class LayerMaps:
    """One layer's output for one image: `maps` (C, H, W) (a vector output is (1, 1, N))."""

    layer: Layer
    maps: torch.Tensor


def choose_layers(model: nn.Module, names: list[str] | None) -> list[Layer]:
    """--layers as given: stage names, module paths, or the word `stages` (every stage but the head);
    default: every conv and pooling layer."""
    if not names:
        layers = map_layers(model)
        if not layers:
            raise ConfigError(f"{type(model).__name__} has no conv or pooling layer; name layers with --layers")
        return layers
    out: list[Layer] = []
    for name in names:
        if name == "stages":
            out += [resolve_layer(model, s) for s in stage_names(model) if s != "head"]
        else:
            out.append(resolve_layer(model, name, "--layers"))
    return out


def capture(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> tuple[list[torch.Tensor | None],
                                                                                    torch.Tensor]:
    """The outputs of `modules` (each cloned when made; the last call wins for a module used twice) and the
    model's output, for input batch `x`. The hooks are removed even when the forward pass fails."""
    seen: dict[int, torch.Tensor] = {}

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            seen[id(module)] = output.detach().clone()

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen.get(id(m)) for m in modules], out


def activation_maps(model: nn.Module, x: torch.Tensor, layers: list[Layer]) -> tuple[list[LayerMaps], torch.Tensor]:
    """Each layer's output for the one image `x` (1, C, H, W), and the model's logits."""
    outs, logits = capture(model, [layer.module for layer in layers], x)
    maps = []
    for layer, out in zip(layers, outs):
        if out is None:
            continue  # the layer did not run for this input (e.g. an auxiliary head in eval mode)
        o = out[0]
        maps.append(LayerMaps(layer, o if o.dim() == 3 else o.reshape(1, 1, -1)))
    return maps, logits


def draw_layer_maps(image, lm: LayerMaps, max_maps: int = 64, caption: str = ""):
    """The input image beside the layer's maps in one grid, on one colour scale (so maps compare)."""
    c, h, w = lm.maps.shape
    vector = h == 1 and w == 1 or c == 1 and h == 1  # 1×1 maps (or a flat vector) are drawn as one strip
    maps = lm.maps.float().cpu().numpy()
    if vector:
        grid = maps.reshape(1, -1)
    else:
        maps = maps[:max_maps]
        grid = tile_grid(maps)
    lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
    rows, cols = grid.shape
    scale = min(0.12, 7.5 / max(cols, 1), 6.0 / max(rows, 1))
    fig = new_figure(max(7.0, cols * scale + 4.5), max(3.0, rows * scale + 1.4))
    gs = fig.add_gridspec(1, 2, width_ratios=[1, max(1.5, cols / max(rows, 1) * 0.8) if not vector else 4])
    show_image(fig.add_subplot(gs[0, 0]), image.pixels, f"input: {image.source}", colorbar=False)
    ax = fig.add_subplot(gs[0, 1])
    cmap = "RdBu_r" if lo < 0 < hi else "viridis"
    bound = max(abs(lo), abs(hi)) if cmap == "RdBu_r" else None
    im = show_grid(ax, grid, cmap=cmap, vmin=-bound if bound else lo,
                   vmax=bound if bound else hi)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="activation")
    shown = f", first {len(maps)} shown" if len(maps) < c else ""
    if vector:
        what = f"{c} maps of 1×1, drawn as a strip" if c > 1 else f"a vector of {w} values"
        ax.set_title(f"{lm.layer.name} ({lm.layer.kind}): {what}", fontsize=9)
        ax.set_yticks([])
        ax.set_xlabel(f"unit{caption}", fontsize=8)
        ax.set_aspect("auto")
    else:
        ax.set_title(f"{lm.layer.name} ({lm.layer.kind}): {c} maps of {h}×{w}{shown}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"maps 0–{len(maps) - 1}, left to right then down{caption}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_activations(cfg) -> list[Path]:
    """`cnnlab viz activations`: one PNG per layer, RUN/viz/activations-<image>-<layer>.png."""
    from ..runs import Run, viz_path
    from .inputs import load_image

    cfg.validate()
    run = Run.open(cfg.run)
    model = run.model(cfg.weights)
    layers = choose_layers(model, cfg.layers)
    image = load_image(run, cfg.image)
    maps, logits = activation_maps(model, image.tensor, layers)
    pred = int(logits.argmax(1))
    caption = f"; predicted {run.classes[pred]}"
    paths = []
    for lm in maps:
        name = viz_path(run.path, "activations", image.name, lm.layer.name)
        out = Path(cfg.out_dir) / name.name if cfg.out_dir else name
        paths.append(save_png(draw_layer_maps(image, lm, cfg.max_maps, caption), out, "--out-dir"))
    return paths
