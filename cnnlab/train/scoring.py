"""`evaluate(model, loader)`: the one scoring function — the training loop's validation, the final test score
and `cnnlab eval` all call it, so a number means the same wherever it is printed."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from .metrics import Meter


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             autocast: Callable[[], contextlib.AbstractContextManager] | None = None, reduce: bool = True) -> dict:
    """Score `model` (in eval mode; its mode is restored) on every batch of `loader`.

    Returns {"loss": plain cross-entropy (no label smoothing), "top1", "top5" (None with fewer than 5
    classes), "count", "correct"}. Sums stay on the device until the end (one host sync) and, under torchrun
    with `reduce`, are all-reduced so that every sample of a sharded loader counts exactly once."""
    was_training = model.training
    model.eval()
    meter: Meter | None = None
    autocast = autocast or contextlib.nullcontext
    try:
        for x, y in loader:
            with autocast():
                logits = model(x)
            logits = logits.float()
            if meter is None:
                meter = Meter(logits.device, topk=logits.shape[1] >= 5)
            meter.update(F.cross_entropy(logits, y), logits, y)
    finally:
        model.train(was_training)
    if meter is None:  # an empty loader (e.g. an empty shard): zero counts, all-reduced like the others
        meter = Meter(next((p.device for p in model.parameters()), torch.device("cpu")))
    values = meter.read(reduce=reduce)
    return {"loss": values["loss"], "top1": values["acc"], "top5": values.get("top5"), "count": values["count"],
            "correct": round(values["acc"] * values["count"])}
