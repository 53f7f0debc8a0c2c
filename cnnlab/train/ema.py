"""Exponential moving average (Polyak averaging) of a model's weights, BN running statistics included."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of the model whose floating-point state (parameters *and* buffers such as BN running
    mean/var) tracks  ema ← d·ema + (1-d)·model  after every optimizer step; integer buffers (BN's
    num_batches_tracked) are copied. With warm-up the decay is min(decay, (1+n)/(10+n)) so the average is
    not dominated by the random initial weights during the first steps (as in TensorFlow's EMA)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses (warmed up over the first updates)."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step after an optimizer step (one fused lerp over all float tensors, no sync)."""
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        floats_ema, floats_src = [], []
        for name, t in self.module.state_dict().items():
            s = src[name]
            if t.is_floating_point():
                floats_ema.append(t)
                floats_src.append(s.detach())
            else:
                t.copy_(s)
        if floats_ema:
            torch._foreach_lerp_(floats_ema, floats_src, 1.0 - d)
