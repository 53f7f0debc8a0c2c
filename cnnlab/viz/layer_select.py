"""Which layer a picture is about: names as the user types them (a shared stage name such as `stage2`, or a
module path such as `features.3`), the defaults (first convolution, last stage), the shape a layer's output
has, and the receptive field of its units, taken from cnnlab's analysis."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..analysis import receptive_field as rfm
from ..errors import ConfigError

MAP_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)


@dataclass(frozen=True)
class Layer:
    """A layer picked by name: `name` as shown in titles and file names, `path` the module path."""

    name: str
    path: str
    module: nn.Module

    @property
    def kind(self) -> str:
        return type(self.module).__name__


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """The model's shared stage names (stem, stage1…, head), or () for a model without stages."""
    return tuple(getattr(model, "stage_names", ()) or ())


def _path_of(model: nn.Module, module: nn.Module) -> str:
    for path, m in model.named_modules():
        if m is module:
            return path
    raise ConfigError("the stage's output module is not part of the model")  # cannot happen for zoo models


def resolve_layer(model: nn.Module, name: str, option: str = "--layer") -> Layer:
    """A stage name (its output module, where a hook taps the stage's output) or a module path."""
    if name in stage_names(model):
        out = model.get_stage(name).output
        if out is None:
            raise ConfigError(f"{option} {name!r}: this stage has no layers in this model")
        return Layer(name, _path_of(model, out), out)
    modules = dict(model.named_modules())
    if name and name in modules:
        return Layer(name, name, modules[name])
    convs = [p for p, _ in conv_layers(model)]
    hint = (f"stages: {', '.join(stage_names(model))}; " if stage_names(model) else "") + \
        (f"conv layers: {', '.join(convs[:8])}{', …' if len(convs) > 8 else ''}" if convs else "no conv layers")
    raise ConfigError(f"{option} {name!r}: no such stage or layer in this model ({hint})")


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every 2-D convolution, in definition order."""
    return [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def map_layers(model: nn.Module) -> list[Layer]:
    """Every conv and pooling layer (the layers that make feature maps), in definition order."""
    return [Layer(p, p, m) for p, m in model.named_modules() if isinstance(m, MAP_TYPES)]


def conv_of(model: nn.Module, name: str | None, option: str = "--layer") -> Layer:
    """The convolution `name` means: a conv module path, the first convolution of a stage, or (None) the
    model's first convolution."""
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no convolution layer (a fully connected network has no "
                          "filters to draw)")
    if name is None:
        return Layer(convs[0][0], *convs[0])
    if name in stage_names(model):
        paths = model.get_stage(name).paths
        for path, conv in convs:
            if any(path == p or path.startswith(p + ".") for p in paths):
                return Layer(path, path, conv)
        raise ConfigError(f"{option} {name!r}: this stage has no convolution")
    layer = resolve_layer(model, name, option)
    if not isinstance(layer.module, nn.Conv2d):
        raise ConfigError(f"{option} {name!r} is a {layer.kind}, not a convolution; conv layers: "
                          f"{', '.join(p for p, _ in convs[:8])}")
    return layer


def output_shapes(model: nn.Module, modules: list[nn.Module], input_shape: tuple[int, int, int]) -> list:
    """The output shape (without the batch) each module produces on one image of `input_shape` (None where a
    module did not run or returned something other than a tensor). One forward pass on zeros."""
    shapes: dict[int, tuple] = {}

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            shapes[id(module)] = tuple(output.shape[1:])

    handles = [m.register_forward_hook(hook) for m in modules]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_shape), device=_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return [shapes.get(id(m)) for m in modules]


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def default_cam_layer(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[Layer, str]:
    """Grad-CAM's default layer: the last stage before the head (Selvaraju et al. use the last convolutional
    feature map). Where that stage's map is 1×1 (LeNet-5's C5 on 32×32 images) a heat map would be one
    constant colour, so the deepest stage with a larger map is taken instead and the note says so."""
    names = [n for n in stage_names(model) if n != "head"]
    if not names:
        convs = conv_layers(model)
        if not convs:
            raise ConfigError(f"{type(model).__name__} has no convolutional stage: Grad-CAM needs a feature map")
        return Layer(convs[-1][0], *convs[-1]), ""
    layers = [resolve_layer(model, n) for n in names]
    shapes = output_shapes(model, [layer.module for layer in layers], input_shape)
    spatial = [(layer, s) for layer, s in zip(layers, shapes) if s is not None and len(s) == 3]
    if not spatial:
        raise ConfigError(f"{type(model).__name__} has no convolutional stage: Grad-CAM needs a feature map")
    last, shape = spatial[-1]
    if shape[1] * shape[2] > 1 or len(spatial) == 1:
        return last, ""
    wider = [(layer, s) for layer, s in spatial if s[1] * s[2] > 1]
    if not wider:
        return last, ""
    chosen, s = wider[-1]
    return chosen, (f"the last stage ({last.name}) makes 1x1 maps, which Grad-CAM cannot localise in; "
                    f"using {chosen.name} ({s[1]}x{s[2]}) instead")


@dataclass(frozen=True)
class LayerProbe:
    """What one traced forward pass tells about a layer: its units' receptive field (from cnnlab's analysis),
    its output shape (without the batch) and how many times it ran."""

    field: rfm.ReceptiveField
    shape: tuple[int, ...] | None
    calls: int


def probe_layer(model: nn.Module, module: nn.Module, input_shape: tuple[int, int, int]) -> LayerProbe:
    """The receptive field (size, jump, centre) of the units of `module`'s output as cnnlab's analysis traces
    it through the real data flow (branches and merges included), its output shape and call count. One
    forward pass on zeros; every hook is removed afterwards."""
    from ..analysis.trace import Tracer

    tracer = Tracer(model)
    x = torch.zeros((1, *input_shape), device=_device(model))
    tracer.mark(x, rfm.INPUT)
    seen: list[tuple[rfm.ReceptiveField | None, tuple | None]] = []

    def hook(mod, inputs, output):
        out = output if isinstance(output, torch.Tensor) else next(iter(output), None)
        if isinstance(out, torch.Tensor):
            seen.append((tracer.field_of(out), tuple(out.shape[1:])))
        else:
            seen.append((None, None))

    handles = tracer.attach(model)
    handles.append(module.register_forward_hook(hook))  # after the tracer's: it has marked the output
    training = model.training
    try:
        with torch.no_grad(), tracer:
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    if not seen:
        return LayerProbe(rfm.UNKNOWN, None, 0)
    field, shape = seen[-1]
    return LayerProbe(field or rfm.UNKNOWN, shape, len(seen))
