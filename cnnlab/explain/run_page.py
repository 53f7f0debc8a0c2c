"""The trained-run explainer page (a CNN Explainer view of the user's own run): one image preprocessed
exactly as the run's training data was, each stage's feature maps (one tile per channel), the class
probabilities, and for every shown channel the kernels of the convolution that produced it.

Everything is computed here in one forward pass with hooks on each stage's output (`Stage.output`) and
embedded in the page: feature maps as palette PNG data URIs (averaged down where larger than
`TILE_SIDE`), kernels and probabilities as numbers. The page's JavaScript only lays them out. A page
over its size budget is rebuilt with smaller tiles, then fewer channels, and says so.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnlabWarning, ConfigError, DataError
from .page import render_page

MAX_CHANNELS = 64         # tiles per stage: its first 64 channels (the page says "64 of 512")
FILTER_INPUTS = 16        # kernels drawn per channel: those of its first 16 input channels
TILE_SIDE = 64            # feature maps with a side over 64 px are average-pooled to at most 64 for display
INPUT_SIDE = 256          # the input is embedded at most 256 px on a side (bilinear, display only)
TOP_CLASSES = 20          # probabilities listed: all classes up to 20, else the 20 most probable
PAGE_BUDGET = 3 * 2**20   # bytes per page
MIN_TILE, MIN_CHANNELS = 8, 4
SEQUENTIAL, DIVERGING = "viridis", "RdBu_r"  # matplotlib colour maps: maps >= 0, and signed maps/kernels


@dataclass
class RunPageConfig:
    """`cnnlab explain RUN_DIR IMAGE`: which run and image, which kept weights, how much to show."""

    run: str
    image: str
    weights: str = "final"
    max_channels: int = MAX_CHANNELS
    budget: int = PAGE_BUDGET

    def validate(self) -> "RunPageConfig":
        if not isinstance(self.max_channels, int) or self.max_channels < 1:
            raise ConfigError(f"--max-channels must be a positive integer, got {self.max_channels!r}")
        if self.budget < 1:
            raise ConfigError(f"page budget must be positive, got {self.budget}")
        return self


@dataclass
class StageTrace:
    """One stage's output for the image (batch dimension dropped) and the last convolution it ran."""

    name: str
    output: torch.Tensor
    conv: nn.Conv2d | None
    conv_name: str | None


# --- the image, as the run's training data ------------------------------------------------------------------

def load_image(path: str | Path, pre) -> tuple[torch.Tensor, str]:
    """IMAGE as the run saw its training images: decoded to the run's channels, resized to its size before
    padding by its resize policy (cnnlab.data.folder's decoder), zero-padded by its `pad`. Returns uint8
    (C, H, W) and a one-line description; a channel conversion is also a CnnlabWarning."""
    from ..data.folder import decode_image, probe

    path = Path(path)
    if not path.exists():
        raise DataError(f"IMAGE {path}: no such file")
    if not path.is_file():
        raise DataError(f"IMAGE {path}: not a file")
    grey, sizes = probe([path])  # DataError naming the file when it is not an image
    (w, h), = sizes
    channels = 1 if grey else 3
    height, width = pre.image_size
    inner = (height - 2 * pre.pad, width - 2 * pre.pad)
    image = torch.from_numpy(decode_image(path, pre.channels, inner, pre.resize).copy())
    said = f"{path.name}: {w}×{h} {'grey' if grey else 'colour'}"
    if channels != pre.channels:  # said once the file has decoded: no note for a file that then fails
        how = "grey (ITU-R 601 luma)" if pre.channels == 1 else "RGB (the grey copied to 3 channels)"
        warnings.warn(f"{path.name} is {'grey' if grey else 'colour'} but the run was trained on "
                      f"{pre.channels}-channel images; converted to {how}", CnnlabWarning, stacklevel=2)
        said += f", converted to {how}"
    if (h, w) != inner:
        how = "squashed" if pre.resize == "squash" else "shorter side scaled, centre-cropped"
        said += f", resized to {inner[1]}×{inner[0]} ({how})"
    if pre.pad:
        image = F.pad(image, (pre.pad,) * 4)
        said += f", zero-padded by {pre.pad} to {width}×{height}"
    return image, said + ", normalised with the run's mean and std"


def model_input(image: torch.Tensor, pre) -> torch.Tensor:
    """The normalised (1, C, H, W) batch, through the same BatchLoader arithmetic as training and
    evaluation ((x / 255 - mean) / std folded into one multiply-add)."""
    from ..data import BatchLoader
    from ..data.dataset import Split

    split = Split(image[None].contiguous(), torch.zeros(1, dtype=torch.long))
    loader = BatchLoader(split, 1, mean=torch.tensor(pre.mean), std=torch.tensor(pre.std))
    return next(iter(loader))[0]


# --- one forward pass, every stage tapped ---------------------------------------------------------------------

def trace_stages(model: nn.Module, x: torch.Tensor) -> tuple[list[StageTrace], torch.Tensor]:
    """Each stage's output (all stages but the head) and the logits, from one forward pass with hooks on
    `Stage.output` (its last call wins) and on the stage's Conv2d layers (the last one to run is the one
    whose kernels produced the stage's channels, when its output channels are the stage's)."""
    if not hasattr(model, "stages"):
        raise ConfigError(f"{type(model).__name__} is not a cnnlab model (it has no stages)")
    names = {id(m): n for n, m in model.named_modules()}
    stages = [(n, s) for n, s in model.stages() if n != "head" and s.output is not None]
    outputs: dict[str, torch.Tensor] = {}
    convs: dict[str, list[nn.Conv2d]] = {n: [] for n, _ in stages}
    handles = []

    def keep_output(name):
        def hook(module, args, out):
            if torch.is_tensor(out):
                outputs[name] = out.detach()[0].clone()  # clone: a later in-place op must not change it
        return hook

    def keep_conv(name):
        return lambda module, args, out: convs[name].append(module)

    for name, stage in stages:
        handles.append(stage.output.register_forward_hook(keep_output(name)))
        handles += [m.register_forward_hook(keep_conv(name)) for m in stage.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    traces = []
    for name, _ in stages:
        if name not in outputs:
            continue
        out = outputs[name]
        if out.dim() not in (1, 3):
            continue  # neither feature maps nor a vector of units: nothing this page can draw
        last = convs[name][-1] if convs[name] else None
        if last is not None and (out.dim() != 3 or last.out_channels != out.shape[0]):
            last = None  # e.g. Inception's concatenated branches: no single convolution made the channels
        traces.append(StageTrace(name, out, last, names.get(id(last)) if last is not None else None))
    return traces, logits


# --- encoding ----------------------------------------------------------------------------------------------------

def palette(name: str) -> np.ndarray:
    """matplotlib colour map `name` as 256 RGB rows (uint8)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def png_uri(array: np.ndarray, colours: np.ndarray | None = None) -> str:
    """A data: URI of a PNG: `array` uint8 (H, W) (palette indices when `colours` is given, else grey) or
    (H, W, 3) RGB."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))
    if colours is not None:
        img.putpalette(colours.tobytes())  # an "L" image becomes "P": one byte per pixel
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colour_scale(maps: torch.Tensor) -> dict:
    """The stage's colour scale: 0…max on the sequential map when no value is negative, else ±max|v| on
    the diverging map (0 white), so that the stage's tiles can be compared with each other."""
    lo, hi = float(maps.min()), float(maps.max())
    if lo >= 0:
        return {"kind": "sequential", "palette": SEQUENTIAL, "lo": 0.0, "hi": hi if hi > 0 else 1.0}
    top = max(-lo, hi)
    return {"kind": "diverging", "palette": DIVERGING, "lo": -top, "hi": top}


def display_maps(maps: torch.Tensor, tile_side: int) -> torch.Tensor:
    """(C, H, W) maps as shown: average-pooled by the smallest integer factor that brings both sides to at
    most `tile_side` (unchanged when they already are)."""
    h, w = maps.shape[1:]
    factor = math.ceil(max(h, w) / tile_side)
    if factor <= 1:
        return maps
    return F.adaptive_avg_pool2d(maps[None], (math.ceil(h / factor), math.ceil(w / factor)))[0]


def quantise(maps: torch.Tensor, scale: dict) -> np.ndarray:
    """Palette indices 0…255 of `maps` on the stage's scale."""
    t = (maps - scale["lo"]) / (scale["hi"] - scale["lo"]) * 255.0
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def _rounded(t: torch.Tensor, scale: float, digits: int = 3) -> list:
    """Values rounded to `digits` significant figures of `scale` (the largest magnitude shown)."""
    decimals = digits - 1 - math.floor(math.log10(scale)) if scale > 0 else digits
    return np.round(t.double().numpy(), max(decimals, 0)).tolist()


def stage_data(trace: StageTrace, max_channels: int, tile_side: int, colours: dict) -> dict:
    """One stage's entry: shape, colour scale, a tile (PNG + full-resolution stats) per shown channel, and
    the producing convolution's kernels for those channels (at most FILTER_INPUTS inputs each)."""
    out = trace.output
    if out.dim() == 1:  # a fully connected stage: its units laid out row by row as one tile
        side = math.ceil(math.sqrt(out.numel()))
        grid = torch.cat([out, out.new_full((side * side - out.numel(),), float(out.min()))]).view(1, -1, side)
        maps, full, shape = grid[:, :math.ceil(out.numel() / side)], out.view(1, 1, -1), [out.numel()]
    else:
        maps, full, shape = out, out, list(out.shape)
    scale = colour_scale(full)
    shown = min(max_channels, maps.shape[0])
    view = display_maps(maps[:shown], tile_side)
    codes = quantise(view, scale)
    flat = full[:shown].flatten(1)
    stats = torch.stack([flat.min(1).values, flat.max(1).values, flat.mean(1)], 1)
    top = float(stats.abs().max())
    tiles = [{"uri": png_uri(codes[k], colours[scale["palette"]]), "stats": s}
             for k, s in enumerate(_rounded(stats, top))]
    entry = {"name": trace.name, "kind": "maps" if out.dim() == 3 else "units", "shape": shape,
             "shown": shown, "map": list(maps.shape[1:]), "tile": list(view.shape[1:]),
             "scale": {**scale, "lo": round(scale["lo"], 6), "hi": round(scale["hi"], 6)},
             "tiles": tiles, "conv": None}
    if trace.conv is not None:
        conv = trace.conv
        weight = conv.weight.detach()[:shown]
        per_group = conv.out_channels // conv.groups
        inputs = min(weight.shape[1], FILTER_INPUTS)
        kernels = weight[:, :inputs]
        w_top = float(kernels.abs().max())
        entry["conv"] = {
            "name": trace.conv_name, "kernel": list(weight.shape[2:]), "stride": list(conv.stride),
            "padding": list(conv.padding) if not isinstance(conv.padding, str) else conv.padding,
            "in_channels": conv.in_channels, "groups": conv.groups, "per_channel_inputs": weight.shape[1],
            "shown_inputs": inputs, "first_input": [(k // per_group) * weight.shape[1] for k in range(shown)],
            "kernels": _rounded(kernels, w_top), "scale": w_top or 1.0,
            "bias": None if conv.bias is None else _rounded(conv.bias.detach()[:shown], w_top)}
    return entry


# --- the page ---------------------------------------------------------------------------------------------------

@dataclass
class Explained:
    """What the page shows, computed once: the preprocessed image, the stage traces and the probabilities."""

    image: torch.Tensor
    preprocess: object  # cnnlab.runs.Preprocess
    description: str
    traces: list[StageTrace]
    probs: torch.Tensor


def explain_image(model: nn.Module, image: torch.Tensor, pre, description: str = "") -> Explained:
    """Run `model` (eval mode) on uint8 `image` normalised as `pre` says; keep every stage's output."""
    traces, logits = trace_stages(model, model_input(image, pre))
    for name, values in [*((t.name, t.output) for t in traces), ("the output", logits)]:
        if not torch.isfinite(values).all():
            raise ConfigError(f"the model computes non-finite values (NaN or inf) in {name} for this image: "
                              "its weights are damaged or training diverged")
    probs = torch.softmax(logits.double(), dim=1)[0]
    return Explained(image, pre, description, traces, probs)


def _input_uri(image: torch.Tensor) -> tuple[str, list[int]]:
    """The preprocessed image as a PNG (reduced to INPUT_SIDE for display when larger) and its size."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    arr = arr[:, :, 0] if arr.shape[2] == 1 else arr
    h, w = arr.shape[:2]
    if max(h, w) > INPUT_SIDE:
        k = INPUT_SIDE / max(h, w)
        arr = np.asarray(Image.fromarray(arr).resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR))
    return png_uri(arr), list(arr.shape[:2])


def page_data(explained: Explained, classes: list[str], about: dict, max_channels: int = MAX_CHANNELS,
              tile_side: int = TILE_SIDE) -> dict:
    """The JSON the run page embeds; `about` names what was explained (keys run, model, data, weights, image,
    test_accuracy, epochs: any may be None)."""
    colours = {SEQUENTIAL: palette(SEQUENTIAL), DIVERGING: palette(DIVERGING)}
    uri, shown_size = _input_uri(explained.image)
    c, h, w = explained.image.shape
    probs = explained.probs
    order = torch.argsort(probs, descending=True)[:TOP_CLASSES].tolist()
    return {
        "kind": "run", "about": about,
        "image": {"uri": uri, "shape": [c, h, w], "shown": shown_size, "description": explained.description,
                  "preprocess": explained.preprocess.to_dict()},
        "stages": [stage_data(t, max_channels, tile_side, colours) for t in explained.traces],
        "probs": [{"index": i, "class": classes[i], "p": float(probs[i])} for i in order],
        "num_classes": len(classes), "predicted": order[0],
        "filter_palette": DIVERGING,
        "palettes": {name: ["#%02x%02x%02x" % tuple(rgb) for rgb in pal] for name, pal in colours.items()},
        "caps": {"max_channels": max_channels, "filter_inputs": FILTER_INPUTS, "tile_side": tile_side,
                 "top_classes": TOP_CLASSES},
        "notes": [],
    }


def fit_budget(build, budget: int, max_channels: int) -> tuple[str, list[str]]:
    """Render with `build(max_channels, tile_side)` → html; while the page is over `budget` bytes, halve the
    tile side (down to MIN_TILE), then the channels per stage (down to MIN_CHANNELS). Returns the page and
    what was reduced; ConfigError when even the smallest settings do not fit."""
    tile, channels, reduced = TILE_SIDE, max_channels, []
    while True:
        html = build(channels, tile, reduced)
        size = len(html.encode("utf-8"))
        if size <= budget:
            return html, reduced
        if tile > MIN_TILE:
            tile //= 2
        elif channels > MIN_CHANNELS:
            channels = max(MIN_CHANNELS, channels // 2)
        else:
            raise ConfigError(f"the page would take {size:,} bytes even with {channels} channels per stage "
                              f"and {tile}-pixel tiles, over its budget of {budget:,} bytes")
        reduced = [f"to stay within {budget / 2**20:.1f} MiB the page shows at most {channels} channels per "
                   f"stage, feature maps averaged down to at most {tile}×{tile}"]


def run_page(config: RunPageConfig) -> str:
    """The page's HTML for `config.image` through the run's model with `config.weights`."""
    from ..runs import Run

    config.validate()
    run = Run.open(config.run)
    pre = run.preprocess
    run.resolve_weights(config.weights)  # cheap checks first: one-line ConfigError when the run kept none
    image, description = load_image(config.image, pre)
    model = run.model(config.weights)
    explained = explain_image(model, image, pre, description)
    result = run.result or {}
    about = {"run": run.path.name, "model": run.config.model, "data": run.config.data, "weights": config.weights,
             "test_accuracy": result.get("test_accuracy"), "epochs": result.get("epochs"),
             "image": Path(config.image).name}

    def build(channels: int, tile: int, reduced: list[str]) -> str:
        data = page_data(explained, run.classes, about, channels, tile)
        data["notes"] += reduced
        return render_page("run.html.j2", f"cnnlab · {run.path.name} · {Path(config.image).name}", data)

    html, reduced = fit_budget(build, config.budget, config.max_channels)
    for note in reduced:
        warnings.warn(note, CnnlabWarning, stacklevel=2)
    return html
