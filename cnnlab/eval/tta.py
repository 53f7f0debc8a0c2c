"""Test-time augmentation as the lectures describe it: average the class probabilities of a fixed set of
views of each image — its mirror image (`flip`), 4 corner + centre crops (`5crop`), those plus their
mirror images (`10crop`), and 10 crops at each of the ResNet recipe's 5 scales (`multiscale`).

A view is (scale, crop position, flip). The image, already at the model's input size H×W, is upscaled by
`scale` (bilinear) and an H×W crop is taken at the position: this is "resize the shorter side to L, take
224×224 crops" with L/224 = scale, so 5crop/10crop use 256/224 (the usual resize-256-crop-224 ratio) and
multiscale uses L in {224, 256, 384, 480, 640}. At scale 1 every crop is the whole image, so the
duplicates are computed once and weighted by their multiplicity (the average equals the recipe's).

Views are made for a whole batch at once (one interpolate per scale, slicing for crops) and evaluated as
batched tensors. `views_numpy` is the same geometry in NumPy for the onnxruntime path, which imports no
torch; the tests check it against the torch version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError

TTA_NAMES = ("none", "flip", "5crop", "10crop", "multiscale")
CROP_SCALE = 256 / 224                                   # 5crop / 10crop: resize to 256, crop 224
MULTISCALE = tuple(s / 224 for s in (224, 256, 384, 480, 640))  # the ResNet paper's test scales
POSITIONS = ("center", "top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class View:
    """One test-time view: upscale by `scale`, crop H×W at `position`, mirror if `flip`."""

    scale: float
    position: str
    flip: bool


def check_tta(name: str | None, option: str = "--tta") -> str | None:
    """The TTA name normalised (None for no TTA); a one-line ConfigError for an unknown one."""
    if name is None:
        return None
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    aliases = {"none": None, "": None, "flip": "flip", "5crop": "5crop", "10crop": "10crop",
               "multiscale": "multiscale", "fivecrop": "5crop", "tencrop": "10crop"}
    if key not in aliases:
        raise ConfigError(f"{option} {name!r}: unknown test-time augmentation; known: {', '.join(TTA_NAMES)}")
    return aliases[key]


def view_plan(name: str | None) -> list[tuple[View, int]]:
    """The distinct views of a TTA with their multiplicity in the recipe (their weight in the average)."""
    name = check_tta(name)
    if name is None:
        return [(View(1.0, "center", False), 1)]
    if name == "flip":
        return [(View(1.0, "center", False), 1), (View(1.0, "center", True), 1)]
    flips = (False,) if name == "5crop" else (False, True)
    scales = MULTISCALE if name == "multiscale" else (CROP_SCALE,)
    plan: list[tuple[View, int]] = []
    for scale in scales:
        for flip in flips:
            if scale == 1.0:  # every crop of the unscaled image is the image itself
                plan.append((View(1.0, "center", flip), len(POSITIONS)))
            else:
                plan += [(View(scale, pos, flip), 1) for pos in POSITIONS]
    return plan


def num_views(name: str | None) -> int:
    """How many views the recipe averages (duplicates counted): flip 2, 5crop 5, 10crop 10, multiscale 50."""
    return sum(n for _, n in view_plan(name))


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The upscaled (H, W) for `scale`, never smaller than the crop."""
    h, w = size
    return max(h, round(h * scale)), max(w, round(w * scale))


def crop_box(size: tuple[int, int], scaled: tuple[int, int], position: str) -> tuple[int, int]:
    """(top, left) of the H×W crop at `position` in an image of size `scaled`."""
    (h, w), (sh, sw) = size, scaled
    top = {"center": (sh - h) // 2, "top-left": 0, "top-right": 0, "bottom-left": sh - h, "bottom-right": sh - h}
    left = {"center": (sw - w) // 2, "top-left": 0, "top-right": sw - w, "bottom-left": 0, "bottom-right": sw - w}
    return top[position], left[position]


def _grouped(plan: list[tuple[View, int]]) -> dict[float, list[tuple[View, int]]]:
    groups: dict[float, list[tuple[View, int]]] = {}
    for view, n in plan:
        groups.setdefault(view.scale, []).append((view, n))
    return groups


def views_torch(x, name: str | None):
    """(views (V, N, C, H, W), weights (V,) summing to 1) of a float batch x (N, C, H, W)."""
    import torch
    from torch.nn import functional as F

    size = tuple(x.shape[-2:])
    out, weights = [], []
    for scale, group in _grouped(view_plan(name)).items():
        scaled = scaled_size(size, scale)
        big = x if scaled == size else F.interpolate(x, size=scaled, mode="bilinear", align_corners=False)
        for view, n in group:
            top, left = crop_box(size, scaled, view.position)
            crop = big[..., top:top + size[0], left:left + size[1]]
            out.append(crop.flip(-1) if view.flip else crop)
            weights.append(n)
    w = torch.tensor(weights, dtype=torch.float32, device=x.device)
    return torch.stack(out), w / w.sum()


def _resize_bilinear_np(x, size: tuple[int, int]):
    """Bilinear resize of (N, C, H, W) as torch's F.interpolate(align_corners=False, antialias=False):
    source coordinate (dst + 0.5) * in/out - 0.5, clamped at 0; the neighbour index stops at the edge."""
    import numpy as np

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(np.int64)
        frac = (src - i0).astype(np.float32)
        i1 = np.minimum(i0 + 1, n_in - 1)
        i0 = np.minimum(i0, n_in - 1)
        return i0, i1, frac

    h0, h1, fh = axis(x.shape[-2], size[0])
    w0, w1, fw = axis(x.shape[-1], size[1])
    rows = x[..., h0, :] * (1 - fh)[:, None] + x[..., h1, :] * fh[:, None]
    return (rows[..., w0] * (1 - fw) + rows[..., w1] * fw).astype(np.float32)


def views_numpy(x, name: str | None):
    """`views_torch` in NumPy (for the onnxruntime path): (views (V, N, C, H, W), weights (V,))."""
    import numpy as np

    size = tuple(x.shape[-2:])
    out, weights = [], []
    for scale, group in _grouped(view_plan(name)).items():
        scaled = scaled_size(size, scale)
        big = x if scaled == size else _resize_bilinear_np(x, scaled)
        for view, n in group:
            top, left = crop_box(size, scaled, view.position)
            crop = big[..., top:top + size[0], left:left + size[1]]
            out.append(crop[..., ::-1] if view.flip else crop)
            weights.append(n)
    w = np.asarray(weights, dtype=np.float32)
    return np.ascontiguousarray(np.stack(out)), w / w.sum()


def tta_log_proba(model: Callable, x, name: str | None, max_batch: int = 512):
    """log of the view-averaged softmax probabilities (N, K) of `model` on the float batch x.

    All views of one scale go through the model as one batched tensor (split into chunks of at most
    `max_batch` images); the average is taken in log space (logsumexp), so with no TTA this is exactly
    log_softmax(model(x))."""
    import torch

    n = x.shape[0]
    if name is None:
        return torch.log_softmax(model(x).float(), dim=1)
    views, weights = views_torch(x, name)
    flat = views.reshape(-1, *views.shape[2:])
    chunk = max(1, max_batch)
    logits = torch.cat([model(flat[i:i + chunk]).float() for i in range(0, len(flat), chunk)])
    logp = torch.log_softmax(logits, dim=1).reshape(len(weights), n, -1)
    return torch.logsumexp(logp + weights.log().view(-1, 1, 1), dim=0)
