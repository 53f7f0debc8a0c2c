"""Fast in-memory batches: index batches over a uint8 tensor, normalised (and augmented) per batch with
torch ops. No per-sample Python, no float copy of the whole set."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from .dataset import Split


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch): the epoch's data order can be recreated on resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + salt) % (2**63))


class BatchLoader:
    """Iterate (images float32 normalised, labels) batches over a Split.

    The order of epoch e is a permutation drawn from (seed, e), so it is reproducible and a resumed run
    can skip the batches it already saw (`start_step`). Under distributed training each rank takes a
    disjoint shard (rank::world_size) of the permutation. `augment(batch_uint8_or_float, generator)` is
    applied to each whole batch with a generator seeded by (seed, epoch, step).
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 device: str | torch.device = "cpu", channels_last: bool = False, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.augment, self.drop_last = augment, drop_last
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        c = self.images.shape[1]
        mean = torch.zeros(c) if mean is None else mean
        std = torch.ones(c) if std is None else std
        # Fold /255 and normalisation into one multiply-add: x * scale + shift.
        self.scale = (1.0 / (255.0 * std)).view(1, c, 1, 1).to(self.device)
        self.shift = (-mean / std).view(1, c, 1, 1).to(self.device)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select epoch `epoch`'s order; the next pass starts at batch `start_step` (resume mid-epoch)."""
        self.epoch, self.start_step = epoch, start_step

    def indices(self) -> torch.Tensor:
        """This rank's sample order for the current epoch (a seeded permutation when shuffling)."""
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.split), self.world_size))  # this rank's shard, without drawing it
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.device)
        steps = len(self)
        for step in range(self.start_step, steps):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.images.index_select(0, idx)
            if self.augment is not None:
                x = self.augment(x, epoch_generator(self.seed, self.epoch, salt=step + 1))
            x = x.float().mul_(self.scale).add_(self.shift) if x.dtype == torch.uint8 else \
                x.mul(self.scale).add_(self.shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
        self.start_step = 0
