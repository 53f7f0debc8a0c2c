"""What `cnnlab summary` and `compare` analyse: a notation string exactly as written (no classifier the
user never wrote), anything else (a registered name, a saved run) as `resolve.resolve_model` builds it.

The lecture's FLOPs exercise, one 5x5 filter on 3x32x32, is `summary conv5-1p0 --input 3x32x32`: the
stack is the one conv layer, (2*3*5*5)*1*28*28 = 117,600 FLOPs, and nothing else."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def resolve_as_written(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None):
    """(model, display name, (C, H, W)) like `resolve_model`, except that a notation string is built with
    only the layers written: Flatten + fc(num_classes) is appended only when `num_classes` is given and
    the notation does not end in an fc already (an fc it ends in gets `num_classes` outputs)."""
    from ..layers import meta_device
    from ..models import build_model
    from ..models.registry import is_notation
    from .resolve import resolve_model

    if not spec.strip():
        raise ConfigError("MODEL is empty: give a model name (`cnnlab models`), a notation string or a run folder")
    if Path(spec).is_dir():
        try:
            return resolve_model(spec, input_size, num_classes)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            # resolve_model reads the run's config.json: a value of the wrong kind there ("image_size": "abc")
            # is that file's fault, said in one line.
            raise ConfigError(f"{Path(spec) / 'config.json'}: cannot rebuild the model from it "
                              f"({type(exc).__name__}: {exc})") from None
    if not is_notation(spec):
        return resolve_model(spec, input_size, num_classes)
    if input_size is None:
        raise ConfigError("a notation model needs --input CxHxW (it has no canonical input size)")
    c, h, w = input_size
    kwargs = dict(num_classes=num_classes, in_channels=c, input_size=(h, w),
                  append_classifier=num_classes is not None)
    with meta_device():  # every notation layer builds on meta: shapes and counts need no weight values
        return build_model(spec, **kwargs), spec, (c, h, w)
