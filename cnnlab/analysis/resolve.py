"""Turn what a user typed into something to analyse: `--input 3x224x224`, and a MODEL that is a
registered name, a notation string or a saved run directory (config.json + model.safetensors)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConfigError


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x224x224' (or '3,224,224', '3×224×224') -> (3, 224, 224); anything else is a one-line error."""
    parts = [p for p in re.split(r"[x×X, ]+", text.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ConfigError(f"--input must be CxHxW with three positive integers (e.g. 3x224x224), got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _run_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{path} is a directory but not a saved run: it has no config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {cfg_file}: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{cfg_file} must hold a JSON object")
    # The training engineer may nest the model options; accept {"model": "resnet18", ...} or
    # {"model": {"name": "resnet18", ...}}.
    model = cfg.get("model")
    if isinstance(model, dict):
        cfg = {**cfg, **model}
        model = model.get("name") or model.get("arch")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{cfg_file} has no \"model\" key naming the architecture")
    cfg["model"] = model
    return cfg


def resolve_model(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None,
                  meta: bool = True):
    """(model, display name, (C, H, W)) for a registered name, a notation string or a run directory.

    With meta=True the model is built on the meta device (no weights allocated or initialised: shapes,
    parameter counts and FLOPs do not depend on weight values), falling back to a normal build when a
    builder cannot run on meta."""
    from ..layers import meta_device
    from ..models import build_model, model_info
    from ..models.registry import is_notation

    name = spec
    path = Path(spec)
    if path.is_dir():
        cfg = _run_config(path)
        name = cfg["model"]
        if num_classes is None and cfg.get("num_classes") is not None:
            num_classes = int(cfg["num_classes"])
        if input_size is None:
            size = cfg.get("input_size") or cfg.get("image_size")
            channels = cfg.get("in_channels")
            if size is not None:
                hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)[-2:]
                if len(hw) != 2:
                    raise ConfigError(f"{path}/config.json: cannot read an image size from {size!r}")
                if channels is None and not is_notation(name):
                    channels = model_info(name).in_channels
                input_size = (int(channels or 3), *hw)  # type: ignore[assignment]
            elif channels is not None:
                ref = None if is_notation(name) else model_info(name).input_size
                if ref is None:
                    raise ConfigError(f"{path}/config.json gives no input_size/image_size; pass --input")
                input_size = (int(channels), *ref)  # type: ignore[assignment]
        name_display = f"{name} ({path})"
    else:
        name_display = spec
        if ("/" in spec or spec.startswith(".")) and not is_notation(spec):
            raise ConfigError(f"{spec}: no such run directory (a saved run's folder, a model name from "
                              "`cnnlab models`, or the lectures' notation)")
    if input_size is None:
        if is_notation(name):
            raise ConfigError("a notation model needs --input CxHxW (it has no canonical input size)")
        input_size = model_info(name).canonical_input
    c, h, w = input_size
    kwargs = dict(num_classes=num_classes, in_channels=c, input_size=(h, w))
    if meta:
        try:
            with meta_device():
                return build_model(name, **kwargs), name_display, (c, h, w)
        except (RuntimeError, NotImplementedError):
            pass  # a builder that computes with real tensors: build it normally below
    return build_model(name, **kwargs), name_display, (c, h, w)
