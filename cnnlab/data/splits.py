"""Stratified, seeded train/validation/test splits (the lectures' 60/20/20 by default)."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def stratified_split(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Index tensors, one per fraction, each holding every class in proportion (reproducible from seed)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        bounds = torch.tensor([0.0, *fractions]).cumsum(0) * len(idx)
        cuts = bounds.round().long().tolist()
        cuts[-1] = len(idx)
        for i in range(len(fractions)):
            parts[i].append(idx[cuts[i]:cuts[i + 1]])
    return [torch.sort(torch.cat(p)).values if p else torch.empty(0, dtype=torch.long) for p in parts]
