"""Argument handling shared by several sub-commands (kept light: no torch at import)."""

from __future__ import annotations

from pathlib import Path


def resolve_model_arg(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None,
                      meta: bool = True):
    """(model, display name, (C, H, W)) for MODEL as the user typed it: a saved run directory (opened through
    cnnlab.runs, so the run's own options, input size and class count are used), a registered name or a
    notation string."""
    from ..analysis.resolve import resolve_model

    if Path(spec).is_dir():
        from ..runs import Run

        run = Run.open(spec)
        pre = run.preprocess
        size = input_size or (pre.channels, *pre.image_size)
        model, _, size = resolve_model(run.config.model, size, num_classes or run.num_classes, meta,
                                       options=run.model_options)
        return model, f"{run.config.model} ({spec})", size
    return resolve_model(spec, input_size, num_classes, meta)
