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


def limit_per_class(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices keeping at most `n` samples of each class, chosen at random from `seed`."""
    if n < 1:
        raise ConfigError(f"limit_per_class must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed + 7)
    keep = []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.sort(torch.cat(keep)).values if keep else torch.empty(0, dtype=torch.long)
