"""The lectures' data augmentations as whole-batch tensor ops, built from a spec such as "flip,crop:4".

Grammar (comma-separated tokens, or a list of tokens from a config file)::

    token := NAME [":" ARG [":" ARG ...]] ["@" PROB]       ARG := NUMBER | NUMBER "-" NUMBER

    flip[@p]              horizontal mirror                                  (default p = 0.5)
    crop:PAD              random crop of the image's own size after zero-padding PAD pixels
    scale[:LO-HI]         ResNet scale augmentation: short side L ~ U[LO, HI] (default 256-480), then a
                          random 224 crop, expressed relative to the image: a window of 224/L of its side,
                          resized back; values <= 1 are taken as the window fraction range itself
    rrc[:LO-HI]           Inception random-resized crop: area fraction ~ U[LO, HI] (default 0.08-1),
                          aspect ratio log-uniform in [3/4, 4/3], resized back to the image size
    rotate:DEG            rotation by U[-DEG, DEG] degrees
    translate:FRAC        shift by U[-FRAC, FRAC] of the width/height
    shear:DEG             horizontal shear by U[-DEG, DEG] degrees
    stretch:FRAC          independent x/y scaling by U[1-FRAC, 1+FRAC]
    lens:K                radial distortion r' = r(1 + k r^2), k ~ U[-K, K] (barrel / pincushion)
    jitter:B[:C[:S]]      brightness, contrast, saturation factors ~ U[1-v, 1+v] (C, S default to B)
    pca[:SIGMA]           AlexNet's PCA colour augmentation, alpha ~ N(0, SIGMA) (default 0.1)
    erase[:LO-HI]         random erasing of a box covering U[LO, HI] of the area (default 0.02-0.4),
                          aspect log-uniform in [0.3, 3.3], filled with uniform noise

Every token takes "@p", the per-sample probability of applying it (default 1, flip 0.5, erase 0.5).
Each argument's kind (number or range) and range are checked when the spec is parsed (augment_spec.py).
All geometric tokens (scale, rrc, rotate, translate, shear, stretch) are composed into ONE affine matrix
per sample and applied in a single affine_grid + grid_sample call (bilinear, zeros outside).

The returned callable takes a uint8 (or float 0..255) batch N×C×H×W on any device and a torch.Generator;
all random numbers are drawn on the CPU from that generator and moved to the batch's device, so the result
is deterministic given the generator on every device. Output: uint8 when only flip/crop ran, otherwise
float32 in 0..255 units (the loader normalises both).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .augment_spec import AFFINE as _AFFINE
from .augment_spec import Op, format_spec, parse_spec

__all__ = ["Augment", "Op", "build_augmentation", "parse_spec", "pca_basis"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """U[0, 1) numbers on the CPU from `gen` (so a seed gives the same draws whatever the batch's device)."""
    return torch.rand(*shape, generator=gen)


def _uniform(gen, n, lo, hi):
    """n numbers ~ U[lo, hi) from `gen`."""
    return lo + (hi - lo) * _rand(gen, n)


def _mask(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """Per-sample Bernoulli(p) mask (always drawn, so the stream of draws does not depend on p)."""
    return _rand(gen, n) < p


def _flip(x, op, gen):
    """Mirror the chosen samples: stack (x, flipped x) and index_select each sample's version (a plain row
    copy; torch.where with a broadcast mask is several times slower on small uint8 batches)."""
    n = x.shape[0]
    m = _mask(gen, n, op.p).long().to(x.device)
    both = torch.stack((x, x.flip(3))).view(2 * n, *x.shape[1:])
    return both.index_select(0, m * n + torch.arange(n, device=x.device))


def _crop(x, op, gen):
    """Zero-pad by PAD, then take every output row (w pixels) with ONE index_select from an overlapping
    as_strided view of the flat padded buffer whose row k is flat[k:k + w]: each output row (n, c, i)
    starts at ((n·C + c)·Hp + oy_n + i)·Wp + ox_n. A memcpy per row, no per-element index maths."""
    pad = int(op.args[0])
    n, c, h, w = x.shape
    off = (_rand(gen, 2, n) * (2 * pad + 1)).long().clamp_max(2 * pad)
    off = torch.where(_mask(gen, n, op.p), off, torch.full_like(off, pad)).to(x.device)
    hp, wp = h + 2 * pad, w + 2 * pad
    flat = F.pad(x, (pad, pad, pad, pad)).reshape(-1)
    rows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    plane = torch.arange(n * c, device=x.device).view(n, c, 1) * hp
    starts = (plane + off[0].view(n, 1, 1) + torch.arange(h, device=x.device)) * wp + off[1].view(n, 1, 1)
    return rows.index_select(0, starts.flatten()).view(n, c, h, w)


def _window(op, gen, n):
    """Per-sample crop-window fractions (fx, fy) of the image side for "scale" (ResNet) or "rrc"
    (Inception), drawn from `gen`."""
    if op.name == "scale":
        lo, hi = op.args[0] if op.args else (256.0, 480.0)
        if hi > 1:  # ResNet lengths: window = 224 / L, L ~ U[lo, hi]
            fx = 224.0 / _uniform(gen, n, max(lo, 1e-6), hi)
        else:
            fx = _uniform(gen, n, max(lo, 1e-3), hi)
        fx = fx.clamp(max=1.0)
        return fx, fx.clone()
    lo, hi = op.args[0] if op.args else (0.08, 1.0)
    area = _uniform(gen, n, max(lo, 1e-3), min(hi, 1.0))
    ratio = torch.exp(_uniform(gen, n, math.log(3 / 4), math.log(4 / 3)))
    return (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)


def _affine_matrix(op, gen, n, h, w):
    """(n, 3, 3) pixel-space matrices (centre origin, output → input coordinates) for one geometric op."""
    m = torch.eye(3).expand(n, 3, 3).clone()
    if op.name in ("scale", "rrc"):
        fx, fy = _window(op, gen, n)
        # Window centre anywhere that keeps every sample point between the outermost pixel centres
        # ((w - 1) / 2 from the middle), so no zero padding bleeds into a crop at the border.
        tx = (_rand(gen, n) * 2 - 1) * (1 - fx)
        ty = (_rand(gen, n) * 2 - 1) * (1 - fy)
        m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2] = fx, fy, tx * (w - 1) / 2, ty * (h - 1) / 2
    elif op.name == "rotate":
        t = torch.deg2rad(_uniform(gen, n, -op.args[0], op.args[0]))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
    elif op.name == "translate":
        m[:, 0, 2] = _uniform(gen, n, -op.args[0], op.args[0]) * w
        m[:, 1, 2] = _uniform(gen, n, -op.args[0], op.args[0]) * h
    elif op.name == "shear":
        m[:, 0, 1] = torch.tan(torch.deg2rad(_uniform(gen, n, -op.args[0], op.args[0])))
    elif op.name == "stretch":
        s = op.args[0]
        m[:, 0, 0] = 1 / _uniform(gen, n, 1 - s, 1 + s)  # s < 1, checked when the spec was parsed
        m[:, 1, 1] = 1 / _uniform(gen, n, 1 - s, 1 + s)
    return m


def _affine(x, ops, gen):
    """Compose every geometric op into one 2×3 matrix per sample (pixel-space, so rotations stay rigid
    on non-square images) and warp once; samples every op skipped are copied, not resampled."""
    n, _, h, w = x.shape
    eye = torch.eye(3).expand(n, 3, 3)
    a = eye.clone()
    for op in ops:
        on = _mask(gen, n, op.p)
        a = torch.where(on.view(n, 1, 1), _affine_matrix(op, gen, n, h, w), eye) @ a
    moved = (a - eye).abs().amax(dim=(1, 2)) > 1e-7
    if not bool(moved.any()):
        return x
    # Pixel-space matrix → normalised grid coords: theta = D^-1 A D with D = diag(w/2, h/2).
    d = torch.diag(torch.tensor([w / 2, h / 2, 1.0]))
    theta = (torch.linalg.inv(d) @ a @ d)[:, :2, :]
    idx = torch.nonzero(moved).flatten().to(x.device)
    out = x.float() if x.dtype != torch.float32 else x.clone()
    sub = out.index_select(0, idx)
    grid = F.affine_grid(theta[moved].to(x.device), list(sub.shape), align_corners=False)
    out[idx] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


def _lens(x, op, gen):
    """Radial distortion: each output pixel at radius r (normalised) samples the input at r(1 + k r^2),
    k ~ U[-K, K] per sample (k > 0 barrel, k < 0 pincushion), one grid_sample for the batch."""
    n, _, h, w = x.shape
    k = _uniform(gen, n, -op.args[0], op.args[0]) * _mask(gen, n, op.p)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    r2 = (gx * gx + gy * gy).view(1, h, w, 1)
    base = torch.stack((gx, gy), dim=-1).view(1, h, w, 2)
    grid = base * (1 + k.to(x.device).view(n, 1, 1, 1) * r2)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _jitter(x, op, gen):
    """Brightness (scale), contrast (blend with the image's mean luma), saturation (blend with each
    pixel's luma), each factor ~ U[1-v, 1+v] per sample."""
    n, c = x.shape[:2]
    b, cn, s = (op.args + [op.args[0]] * 2)[:3]
    on = _mask(gen, n, op.p)
    fb, fc, fs = (torch.where(on, _uniform(gen, n, 1 - min(v, 1), 1 + v), torch.ones(n)).to(x.device)
                  .view(n, 1, 1, 1) for v in (b, cn, s))
    x = x.float() * fb
    if c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        grey = (x * weights).sum(1, keepdim=True)
    else:
        grey = x.mean(1, keepdim=True)
    mean_luma = grey.mean(dim=(2, 3), keepdim=True)
    x = (x - mean_luma) * fc + mean_luma
    if c == 3:
        grey = (x * weights).sum(1, keepdim=True)
        x = (x - grey) * fs + grey
    return x.clamp_(0, 255)


def pca_basis(images: torch.Tensor, max_pixels: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of the 3×3 covariance of RGB pixels in [0, 1]
    units, accumulated in float64 over chunks (a strided subsample above max_pixels pixels)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError("pca colour augmentation needs 3-channel (RGB) images")
    per_image = images.shape[2] * images.shape[3]
    stride = max(1, (len(images) * per_image) // max_pixels)
    s = torch.zeros(3, dtype=torch.float64)
    ss = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    for start in range(0, len(images), 1024 * stride):
        chunk = images[start:start + 1024 * stride:stride].to("cpu", torch.float64) / 255.0
        px = chunk.permute(1, 0, 2, 3).reshape(3, -1)
        s += px.sum(1)
        ss += px @ px.T
        count += px.shape[1]
    mean = s / max(count, 1)
    cov = ss / max(count, 1) - torch.outer(mean, mean)
    vals, vecs = torch.linalg.eigh(cov)
    return vals.flip(0).clamp_min(0).float(), vecs.flip(1).float()


def _pca(x, op, gen, basis):
    """AlexNet: add V (alpha * lambda) to every pixel of an image, alpha ~ N(0, sigma) per image and axis
    (lambda in [0, 1]-pixel units, scaled back to 0..255)."""
    vals, vecs = basis
    n = x.shape[0]
    sigma = op.args[0] if op.args else 0.1
    alpha = torch.randn(n, 3, generator=gen) * sigma * _mask(gen, n, op.p).view(n, 1)
    offset = (alpha * vals) @ vecs.T * 255.0  # (n, 3)
    return (x.float() + offset.to(x.device).view(n, 3, 1, 1)).clamp_(0, 255)


def _erase(x, op, gen):
    """Random erasing: one box per chosen sample, filled with uniform noise. The noise is drawn on the
    batch's device from a seed taken from `gen` (reproducible per device, no host-to-device copy)."""
    n, c, h, w = x.shape
    lo, hi = op.args[0] if op.args else (0.02, 0.4)
    area = _uniform(gen, n, lo, min(hi, 1.0))
    ratio = torch.exp(_uniform(gen, n, math.log(0.3), math.log(3.3)))
    eh = ((area / ratio).sqrt() * h).round().clamp(1, h)
    ew = ((area * ratio).sqrt() * w).round().clamp(1, w)
    y0 = (_rand(gen, n) * (h - eh + 1)).floor()
    x0 = (_rand(gen, n) * (w - ew + 1)).floor()
    on = _mask(gen, n, op.p)
    noise_gen = torch.Generator(device=x.device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    noise = torch.rand(n, c, h, w, generator=noise_gen, device=x.device) * 255
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0, eh, ew, on = (t.to(x.device).view(n, 1, 1) for t in (y0, x0, eh, ew, on))
    box = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew) & on
    return torch.where(box.unsqueeze(1), noise, x.float())


def build_augmentation(spec: str | list[str] | None, dataset=None) -> Augment | None:
    """Build the batched augmentation for `spec` (see the module doc); None for None/""/"none".

    `dataset` supplies the training split for PCA colour statistics (needed only by "pca").
    """
    ops = parse_spec(spec)
    if not ops:
        return None
    stages: list[Callable] = []
    affine_ops = [op for op in ops if op.name in _AFFINE]
    for op in ops:
        if op.name in _AFFINE:
            if op is affine_ops[0]:  # all geometric ops warp together, at the first one's position
                stages.append(lambda x, g, ops_=tuple(affine_ops): _affine(x, ops_, g))
        elif op.name == "pca":
            if dataset is None:
                raise ConfigError("augmentation 'pca' needs the dataset's training images")
            basis = pca_basis(dataset.train.images)
            stages.append(lambda x, g, op_=op, b=basis: _pca(x, op_, g, b))
        else:
            fn = {"flip": _flip, "crop": _crop, "lens": _lens, "jitter": _jitter, "erase": _erase}[op.name]
            stages.append(lambda x, g, op_=op, fn_=fn: fn_(x, op_, g))

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for stage in stages:
            x = stage(x, generator)
        return x

    augment.spec = format_spec(ops)
    return augment
