"""What `cnnlab summary` and `compare` analyse when MODEL is written in the lectures' notation: exactly the
layers written, with no classifier the user never wrote (a model to train gets one; a stack to count does
not). Registered names and saved runs are resolved by `runs.resolve_model_spec` as before.

The lecture's FLOPs exercise, one 5x5 filter on 3x32x32, is `summary conv5-1p0 --input 3x32x32`: the
stack is the one conv layer, (2*3*5*5)*1*28*28 = 117,600 FLOPs, and nothing else."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def written_notation(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None):
    """(model, display name, (C, H, W)) for a notation string, built on the meta device with only the layers
    written: Flatten + fc(num_classes) is appended only when `num_classes` is given and the notation does
    not end in an fc already (an fc it ends in gets `num_classes` outputs). None when `spec` is not
    notation (a registered name or a run folder: the caller resolves those)."""
    from ..layers import meta_device
    from ..models import build_model
    from ..models.registry import is_notation

    if not spec.strip():
        raise ConfigError("MODEL is empty: give a model name (`cnnlab models`), a notation string or a run folder")
    if Path(spec).is_dir() or not is_notation(spec):
        return None
    if input_size is None:
        raise ConfigError("a notation model needs --input CxHxW (it has no canonical input size)")
    c, h, w = input_size
    with meta_device():  # every notation layer builds on meta: shapes and counts need no weight values
        model = build_model(spec, num_classes=num_classes, in_channels=c, input_size=(h, w),
                            append_classifier=num_classes is not None)
    return model, spec, (c, h, w)
