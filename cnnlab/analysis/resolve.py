"""Turn what a user typed into something to analyse: `--input 3x224x224`, and a MODEL that is a
registered name or a notation string (run directories are opened by cnnlab.runs, above this layer)."""

from __future__ import annotations

import re

from ..errors import ConfigError


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x224x224' (or '3,224,224', '3×224×224') -> (3, 224, 224); anything else is a one-line error."""
    parts = [p for p in re.split(r"[x×X, ]+", text.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ConfigError(f"--input must be CxHxW with three positive integers (e.g. 3x224x224), got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def resolve_model(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None,
                  meta: bool = True, options: dict | None = None):
    """(model, display name, (C, H, W)) for a registered name or a notation string, built with `options`.
    (A saved run directory is opened through cnnlab.runs, which passes its model name, size and options.)

    With meta=True the model is built on the meta device (no weights allocated or initialised: shapes,
    parameter counts and FLOPs do not depend on weight values), falling back to a normal build when a
    builder cannot run on meta."""
    from ..layers import meta_device
    from ..models import build_model, model_info
    from ..models.registry import is_notation

    if ("/" in spec or spec.startswith(".")) and not is_notation(spec):
        raise ConfigError(f"{spec}: no such run directory (a saved run's folder, a model name from "
                          "`cnnlab models`, or the lectures' notation)")
    if input_size is None:
        if is_notation(spec):
            raise ConfigError("a notation model needs --input CxHxW (it has no canonical input size)")
        input_size = model_info(spec).canonical_input
    c, h, w = input_size
    kwargs = dict(num_classes=num_classes, in_channels=c, input_size=(h, w), **(options or {}))
    if meta:
        try:
            with meta_device():
                return build_model(spec, **kwargs), spec, (c, h, w)
        except (RuntimeError, NotImplementedError):
            pass  # a builder that computes with real tensors: build it normally below
    return build_model(spec, **kwargs), spec, (c, h, w)
