"""Which pixels made the decision: occlusion (Zeiler & Fergus), Grad-CAM (Selvaraju et al.), gradient
saliency (Simonyan et al.) and integrated gradients (Sundararajan et al.), all through Captum, PyTorch's
interpretability library. cnnlab picks the layer (the shared stage names), the target class, the grey value
in the run's normalised units, and upsamples; Captum registers and removes its own hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError


def probabilities(model: nn.Module):
    """The forward function occlusion measures: softmax class probabilities."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x).softmax(1)

    return forward


def grey_baseline(x: torch.Tensor, grey: float, mean, std) -> torch.Tensor:
    """An input-shaped tensor holding pixel value `grey` (0-1 units) in the run's normalised units."""
    c = x.shape[1]
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    return ((grey - mean) / std).expand_as(x).contiguous()


@dataclass
class Occlusion:
    """`drop[i, j]`: how much p(target) falls, on average over the square positions that cover pixel (i, j),
    when a grey square covers them (positive: the pixel mattered for the class); `probability` p(target) on
    the intact image."""

    drop: torch.Tensor
    target: int
    probability: float
    patch: int
    stride: int


def occlusion_map(model: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor, patch: int = 8,
                  stride: int = 4, batch_size: int = 64) -> Occlusion:
    """Slide a `patch`×`patch` square of `baseline` (input-shaped) over `x` (1, C, H, W) with `stride`, all
    channels at once; Captum's Occlusion evaluates `batch_size` occluded images per forward pass."""
    from captum.attr import Occlusion as CaptumOcclusion

    c, h, w = x.shape[1:]
    if patch > min(h, w):
        raise ConfigError(f"--patch {patch}: larger than the {h}x{w} image")
    if stride > min(h, w):
        raise ConfigError(f"--stride {stride}: larger than the {h}x{w} image")
    forward = probabilities(model)
    with torch.no_grad():
        p = float(forward(x)[0, target])
        attr = CaptumOcclusion(forward).attribute(x, sliding_window_shapes=(c, patch, patch),
                                                  strides=(c, stride, stride), baselines=baseline, target=target,
                                                  perturbations_per_eval=batch_size)
    return Occlusion(attr[0, 0].detach(), target, p, patch, stride)


@dataclass
class GradCam:
    """`cam` (h, w) at the layer's resolution (ReLU of the channel maps weighted by their mean gradient),
    `upsampled` (H, W) on the input, for class `target` with probability `probability`; `placed_by_field`
    tells whether the map was placed by its units' receptive fields (else stretched over the image)."""

    cam: torch.Tensor
    upsampled: torch.Tensor
    target: int
    probability: float
    placed_by_field: bool = False


def place_on_input(cam: torch.Tensor, field, size: tuple[int, int]) -> torch.Tensor:
    """A (h, w) map of units drawn on the (H, W) input where its units look: unit (i, j) sits at its receptive
    field's centre (c₀ + i·jump₀, c₁ + j·jump₁), bilinear in between, the edge units' values held beyond.

    Plain upsampling stretches the map over the whole image, which is the same thing when the convolutions
    are padded ("same"): then c = (jump − 1)/2 and jump = H/h. With unpadded ("valid") convolutions, as in
    LeNet-5, the units' fields are centred inside the image and stretching would shift the heat outward."""
    h, w = cam.shape
    axes = []
    for n, c, j, length in ((h, field.centre[0], field.jump[0], size[0]), (w, field.centre[1], field.jump[1], size[1])):
        u = (torch.arange(length, dtype=torch.float32) - c) / j  # fractional unit index of each pixel
        axes.append(torch.zeros(length) if n == 1 else 2 * u / (n - 1) - 1)  # grid_sample's [-1, 1] units
    gy, gx = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].to(cam)
    out = F.grid_sample(cam[None, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0]


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: int) -> GradCam:
    """Grad-CAM of class `target` at `layer`'s output for one image x (1, C, H, W), via Captum's
    LayerGradCam (its forward hook returns a copy of the layer's output, so a following in-place ReLU
    cannot overwrite the activations it keeps). The map is placed on the input by its units' receptive fields
    (cnnlab's analysis; see place_on_input), or stretched (Captum's interpolate) where the field is not exact."""
    from captum.attr import LayerAttribution, LayerGradCam

    from .layer_select import probe_layer

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    if cam.dim() != 4:
        raise ConfigError("Grad-CAM needs a layer with feature maps (N, C, H, W); this one outputs "
                          f"{tuple(cam.shape)}")
    field = probe_layer(model, layer, tuple(x.shape[1:])).field
    exact = not (field.unknown or field.is_global or field.approx)
    if exact:
        up = place_on_input(cam[0, 0].detach(), field, tuple(x.shape[-2:]))
    else:
        up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0]
    with torch.no_grad():
        p = float(model(x).softmax(1)[0, target])
    return GradCam(cam[0, 0].detach(), up.detach(), target, p, exact)


@dataclass
class PixelAttribution:
    """`map` (H, W): gradient saliency (max over channels of |∂score/∂pixel|) or integrated gradients (sum
    over channels, signed); `delta` IG's completeness gap (sum of attributions − (F(x) − F(baseline)))."""

    map: torch.Tensor
    method: str
    target: int
    probability: float
    delta: float | None = None


def saliency_map(model: nn.Module, x: torch.Tensor, target: int) -> PixelAttribution:
    """Simonyan et al.'s saliency: |∂ logit_target / ∂ x|, the largest over the colour channels."""
    from captum.attr import Saliency

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad = Saliency(model).attribute(x, target=target, abs=True)
    with torch.no_grad():
        p = float(model(x).softmax(1)[0, target])
    return PixelAttribution(grad[0].amax(0).detach(), "gradient", target, p)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor,
                         steps: int = 32) -> PixelAttribution:
    """Sundararajan et al.'s integrated gradients of logit_target from `baseline` to x (all `steps` points
    in one batch), summed over channels; `delta` is Captum's completeness check."""
    from captum.attr import IntegratedGradients

    with torch.enable_grad():
        attr, delta = IntegratedGradients(model).attribute(x.detach(), baselines=baseline, target=target,
                                                           n_steps=steps, internal_batch_size=steps,
                                                           return_convergence_delta=True)
    with torch.no_grad():
        p = float(model(x).softmax(1)[0, target])
    return PixelAttribution(attr[0].sum(0).detach(), "integrated-gradients", target, p, float(delta.abs().max()))
