"""Model registry: `@register_model` on a builder, `build_model(name_or_notation, ...)`, `list_models()`.

A builder is a function `name(num_classes=K, in_channels=C, input_size=(H, W), **options) -> nn.Module`;
its defaults are the model's canonical configuration (the paper's input size and class count). Its
options are its own further parameters or, when it forwards `**options` to a family constructor, the
keyword-only parameters of `options_from` (so a builder stays two lines)."""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError, GeometryError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it."""

    name: str
    family: str
    description: str
    builder: Callable[..., nn.Module]
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    options_from: Callable | None = None

    @property
    def canonical_input(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    def num_params(self) -> int:
        """Parameter count at the canonical input, built on PyTorch's meta device (no memory, no init
        cost: VGG's 138M parameters count in milliseconds); falls back to a real build if a builder
        needs real tensors."""
        from ..layers import meta_device

        try:
            with meta_device():
                model = self.builder()
        except Exception:  # noqa: BLE001 - a builder that computes with real data; a real error re-raises below
            model = self.builder()
        return sum(p.numel() for p in model.parameters())

    @property
    def options(self) -> dict[str, object]:
        """Builder options beyond num_classes/in_channels/input_size, with their defaults."""
        standard = ("num_classes", "in_channels", "input_size")
        if self.options_from is not None:
            params = inspect.signature(self.options_from).parameters.values()
            return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name not in standard}
        params = inspect.signature(self.builder).parameters.values()
        return {p.name: p.default for p in params
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in standard}


_REGISTRY: dict[str, ModelInfo] = {}

# The lectures' and papers' spellings of registered models, as data (display spelling -> registered name).
# Lookup ignores case and the separators "-", "_", "." and spaces, so "VGG-16", "vgg_16", "Vgg16" and
# "vgg16" are one spelling; entries whose letters already are the registered name are listed so that
# `cnnlab models` can show the paper's form. VGG's configurations go by the paper's letters: A (11 weight
# layers), A-LRN, B (13), C (16, with 1x1 convs), D (16), E (19).
ALIASES: dict[str, str] = {
    "LeNet-300": "lenet300", "LeNet-300-100": "lenet300_100", "LeNet-1": "lenet1", "LeNet-5": "lenet5",
    "AlexNet": "alexnet",
    "VGG-11": "vgg11", "VGG-A": "vgg11", "VGG-11-LRN": "vgg11_lrn", "VGG-A-LRN": "vgg11_lrn",
    "VGG-13": "vgg13", "VGG-B": "vgg13", "VGG-16-C": "vgg16_c", "VGG-C": "vgg16_c",
    "VGG-16": "vgg16", "VGG-D": "vgg16", "VGG-19": "vgg19", "VGG-E": "vgg19",
    "VGG-11-BN": "vgg11_bn", "VGG-A-BN": "vgg11_bn", "VGG-13-BN": "vgg13_bn", "VGG-B-BN": "vgg13_bn",
    "VGG-16-C-BN": "vgg16_c_bn", "VGG-C-BN": "vgg16_c_bn", "VGG-16-BN": "vgg16_bn", "VGG-D-BN": "vgg16_bn",
    "VGG-19-BN": "vgg19_bn", "VGG-E-BN": "vgg19_bn",
    "GoogLeNet": "googlenet", "Inception-v1": "googlenet",
    "ResNet-18": "resnet18", "ResNet-34": "resnet34", "ResNet-50": "resnet50", "ResNet-101": "resnet101",
    "ResNet-152": "resnet152", "Plain-18": "plain18", "Plain-34": "plain34",
    "MobileNet": "mobilenet_v1", "MobileNet-v1": "mobilenet_v1",
}


def _spelling_key(name: str) -> str:
    """What two spellings of one model share: lower case, without "-", "_", "." and whitespace."""
    return re.sub(r"[-_.\s]+", "", name).lower()


def canonical_name(name: str) -> str | None:
    """The registered name `name` spells (exactly, case-insensitively, or as an ALIASES entry); None if
    it spells none. Registered names win over aliases, so a user's own model is never shadowed."""
    if not isinstance(name, str):
        return None
    if name in _REGISTRY:
        return name
    key = _spelling_key(name)
    for registered in _REGISTRY:
        if _spelling_key(registered) == key:
            return registered
    for alias, registered in ALIASES.items():
        if _spelling_key(alias) == key and registered in _REGISTRY:
            return registered
    return None


def aliases_of(name: str) -> list[str]:
    """The papers' spellings of registered model `name` (from ALIASES), in table order."""
    return [alias for alias, registered in ALIASES.items() if registered == name]


def register_model(family: str, description: str, options_from: Callable | None = None) -> Callable:
    """Register a builder under its function name; raises ValueError on a duplicate name.

    `options_from`: the family constructor the builder forwards `**options` to; its keyword-only
    parameters are the model's options."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        sig = inspect.signature(fn)
        for required in ("num_classes", "in_channels", "input_size"):
            if required not in sig.parameters:
                raise TypeError(f"builder {name} must take a {required!r} argument")
        _REGISTRY[name] = ModelInfo(
            name=name, family=family, description=description, builder=fn,
            num_classes=sig.parameters["num_classes"].default,
            in_channels=sig.parameters["in_channels"].default,
            input_size=tuple(sig.parameters["input_size"].default), options_from=options_from)
        return fn

    return deco


def list_models(family: str | None = None) -> list[ModelInfo]:
    """Every registered model (optionally one family), in registration order."""
    return [m for m in _REGISTRY.values() if family is None or m.family == family]


def model_info(name: str) -> ModelInfo:
    """The registry entry `name` spells (a registered name or one of its ALIASES, case-insensitively)."""
    registered = canonical_name(name)
    if registered is None:
        spellings = {**{_spelling_key(a): r for a, r in ALIASES.items()}, **{_spelling_key(r): r for r in _REGISTRY}}
        close = difflib.get_close_matches(_spelling_key(str(name)), spellings, n=3)
        suggestions = list(dict.fromkeys(spellings[c] for c in close))
        hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
        raise ConfigError(f"unknown model {name!r}{hint}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[registered]


def is_notation(spec: str) -> bool:
    """A model spec written in the lectures' layer notation rather than a registered name or alias."""
    if canonical_name(spec) is not None:
        return False
    return (any(ch in spec for ch in ">,\n ")
            or re.match(r"^\s*((dwconv|conv|fc|dropout)-?\d|(max|avg)pool)", spec, re.IGNORECASE) is not None)


def _check_option_type(model: str, key: str, value: object, default: object) -> None:
    """A one-line ConfigError when an option's value is not of its default's kind (a number where a number
    is expected, a bool for a switch, a name for a name), before the builder trips over it."""
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) or isinstance(default, float))
        kind = "a number" if isinstance(default, float) else "an integer"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a name"
    else:
        return
    if not ok:
        from ..utils.limits import short_text

        raise ConfigError(f"model {model!r}: option {key} expects {kind} (default {default!r}), got "
                          f"{short_text(repr(value))}")


def build_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                input_size: tuple[int, int] | int | None = None, **options) -> nn.Module:
    """Build a model by registered name or from the lectures' notation (e.g. "conv5-6p2 > relu > fc10").

    Unspecified num_classes / in_channels / input_size take the model's canonical values."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if is_notation(name):
        from .notation import build_from_notation

        return build_from_notation(name, num_classes=num_classes, in_channels=3 if in_channels is None else in_channels,
                                   input_size=input_size, **options)
    info = model_info(name)
    name = info.name
    known = info.options
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(f"model {name!r} has no option {unknown[0]!r}; its options: "
                          f"{', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}")
    for key, value in options.items():
        _check_option_type(name, key, value, known[key])
    kwargs = dict(options)
    kwargs["num_classes"] = info.num_classes if num_classes is None else int(num_classes)
    kwargs["in_channels"] = info.in_channels if in_channels is None else int(in_channels)
    kwargs["input_size"] = info.input_size if input_size is None else tuple(int(v) for v in input_size)
    if kwargs["num_classes"] < 1 or kwargs["in_channels"] < 1:
        raise ConfigError(f"model {name!r}: num_classes and in_channels must be positive, got "
                          f"{kwargs['num_classes']} and {kwargs['in_channels']}")
    if min(kwargs["input_size"]) < 1:
        raise GeometryError(f"model {name!r}: input size {kwargs['input_size']} must be positive")
    return info.builder(**kwargs)
