"""The attribution pictures: the input, the heat map on its own (with its colour bar and pixel axes) and the
heat map over the image; and the `cnnlab viz occlusion|gradcam|saliency` commands that draw them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import CnnlabWarning
from .attribution import (GradCam, Occlusion, PixelAttribution, grad_cam, grey_baseline, integrated_gradients,
                          occlusion_map, saliency_map)
from .figures import new_figure, overlay, pixel_axes, save_png, show_image
from .inputs import ViewImage, load_image, resolve_class


def _class_text(classes: list[str], index: int) -> str:
    return f"'{classes[index]}'" if classes[index] != str(index) else classes[index]


def _truth(image: ViewImage, classes: list[str], pred: int) -> str:
    truth = f"true {_class_text(classes, image.label)}, " if image.label is not None else ""
    return f"{truth}predicted {_class_text(classes, pred)}"


def draw_occlusion(image: ViewImage, occ: Occlusion, classes: list[str], pred: int):
    fig = new_figure(11.0, 3.6)
    axes = [fig.add_subplot(1, 3, k + 1) for k in range(3)]
    show_image(axes[0], image.pixels, f"input ({_truth(image, classes, pred)})", colorbar=False)
    drop = occ.drop.float().cpu().numpy()
    bound = max(float(abs(drop).max()), 1e-6)
    name = _class_text(classes, occ.target)
    im = axes[1].imshow(drop, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label=f"drop in p({name})")
    axes[1].set_title(f"drop in p({name}) when covered\n{occ.patch}×{occ.patch} grey square, stride {occ.stride}",
                      fontsize=9)
    pixel_axes(axes[1])
    overlay(axes[2], image.pixels, drop, f"over the image (p({name}) = {occ.probability:.3f} uncovered)",
            cmap="RdBu_r", vmin=-bound, vmax=bound, label=f"drop in p({name})")
    fig.suptitle("Occlusion: red regions are the ones the class needs", fontsize=10)
    fig.tight_layout()
    return fig


def draw_grad_cam(image: ViewImage, gc: GradCam, layer_name: str, classes: list[str], pred: int):
    fig = new_figure(11.0, 3.6)
    axes = [fig.add_subplot(1, 3, k + 1) for k in range(3)]
    show_image(axes[0], image.pixels, f"input ({_truth(image, classes, pred)})", colorbar=False)
    cam = gc.cam.float().cpu().numpy()
    top = max(float(cam.max()), 1e-12)
    name = _class_text(classes, gc.target)
    im = axes[1].imshow(cam / top, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="Grad-CAM ÷ its maximum")
    h, w = cam.shape
    axes[1].set_title(f"Grad-CAM for {name} at {layer_name}\n({h}×{w} map)", fontsize=9)
    axes[1].set_xlabel("column (map unit)", fontsize=8)
    axes[1].set_ylabel("row (map unit)", fontsize=8)
    axes[1].tick_params(labelsize=7)
    up = gc.upsampled.float().cpu().numpy() / top
    how = "placed by receptive field" if gc.placed_by_field else "stretched over the image"
    overlay(axes[2], image.pixels, up, f"{how} (p({name}) = {gc.probability:.3f})", cmap="jet",
            vmin=0, vmax=1, label="Grad-CAM ÷ its maximum")
    fig.suptitle("Grad-CAM: where the features that raise the class score are", fontsize=10)
    fig.tight_layout()
    return fig


def draw_saliency(image: ViewImage, pa: PixelAttribution, classes: list[str], pred: int):
    fig = new_figure(7.6, 3.6)
    axes = [fig.add_subplot(1, 2, k + 1) for k in range(2)]
    show_image(axes[0], image.pixels, f"input ({_truth(image, classes, pred)})", colorbar=False)
    m = pa.map.float().cpu().numpy()
    name = _class_text(classes, pa.target)
    if pa.method == "gradient":
        im = axes[1].imshow(m, cmap="hot", vmin=0, interpolation="nearest")
        label, title = f"|∂ score({name}) / ∂ pixel|", f"gradient saliency for {name}"
    else:
        bound = max(float(abs(m).max()), 1e-12)
        im = axes[1].imshow(m, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        label = f"contribution to score({name})"
        title = f"integrated gradients for {name}\n(from black; completeness gap {pa.delta:.2g})"
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label=label)
    axes[1].set_title(title, fontsize=9)
    pixel_axes(axes[1])
    fig.tight_layout()
    return fig


def _prepare(cfg):
    """(run, model, image, predicted class, target class or None) for a one-image command."""
    from ..runs import Run

    cfg.validate()
    run = Run.open(cfg.run)
    target = resolve_class(run.classes, cfg.target)
    model = run.model(cfg.weights)
    image = load_image(run, cfg.image)
    with torch.no_grad():
        pred = int(model(image.tensor).argmax(1))
    return run, model, image, pred, target


def plot_occlusion(cfg) -> tuple[Path, Occlusion]:
    """`cnnlab viz occlusion`: RUN/viz/occlusion-<image>.png for the true class (else the predicted one)."""
    from ..runs import viz_path

    run, model, image, pred, target = _prepare(cfg)
    if target is None:
        target = image.label if image.label is not None else pred
    pre = run.preprocess
    base = grey_baseline(image.tensor, cfg.grey, pre.mean, pre.std)
    occ = occlusion_map(model, image.tensor, target, base, cfg.patch, cfg.stride, cfg.batch_size)
    out = Path(cfg.out) if cfg.out else viz_path(run.path, "occlusion", image.name)
    return save_png(draw_occlusion(image, occ, run.classes, pred), out), occ


def plot_grad_cam(cfg) -> tuple[Path, GradCam]:
    """`cnnlab viz gradcam`: RUN/viz/gradcam-<image>-<layer>.png for --class (default: the predicted one)."""
    from ..runs import viz_path
    from .layer_select import default_cam_layer, resolve_layer

    run, model, image, pred, target = _prepare(cfg)
    if cfg.layer:
        layer = resolve_layer(model, cfg.layer)
    else:
        layer, note = default_cam_layer(model, tuple(image.tensor.shape[1:]))
        if note:
            warnings.warn(note, CnnlabWarning, stacklevel=2)
    gc = grad_cam(model, image.tensor, layer.module, pred if target is None else target)
    out = Path(cfg.out) if cfg.out else viz_path(run.path, "gradcam", image.name, layer.name)
    return save_png(draw_grad_cam(image, gc, layer.name, run.classes, pred), out), gc


def plot_saliency(cfg) -> tuple[Path, PixelAttribution]:
    """`cnnlab viz saliency`: RUN/viz/saliency-<image>-<method>.png."""
    from ..runs import viz_path

    run, model, image, pred, target = _prepare(cfg)
    target = pred if target is None else target
    if cfg.method == "gradient":
        pa = saliency_map(model, image.tensor, target)
    else:
        pre = run.preprocess
        pa = integrated_gradients(model, image.tensor, target, grey_baseline(image.tensor, 0.0, pre.mean, pre.std),
                                  cfg.steps)
    out = Path(cfg.out) if cfg.out else viz_path(run.path, "saliency", image.name, cfg.method)
    return save_png(draw_saliency(image, pa, run.classes, pred), out), pa
