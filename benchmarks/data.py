"""The data pipeline: cnnlab's batched in-memory loader against a per-sample torch Dataset + DataLoader
doing the same work (flip + crop:4 + normalise) on CIFAR-sized 3×32×32 uint8 images, and the loader's
peak resident memory against the uint8 size of the set.

The per-sample baseline is the standard recipe (torchvision's RandomHorizontalFlip + RandomCrop(32, 4)
+ Normalize), written on uint8 tensors so no PIL conversion is charged to it, collated by a DataLoader
with no worker processes (the same cores as the batched side).
"""

from __future__ import annotations

import resource
import time

from .harness import Check, Mode, Result, fmt_ratio, interleaved, paired_ratio

NAME = "data"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _per_sample_dataset(images, labels, mean, std, pad: int = 4, seed: int = 0):
    import torch

    class PerSample(torch.utils.data.Dataset):
        """The usual per-sample pipeline: one image at a time in Python, collated by the DataLoader."""

        def __init__(self):
            self.gen = torch.Generator().manual_seed(seed)
            self.mean, self.std = mean.view(3, 1, 1), std.view(3, 1, 1)

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            x = images[i]
            if torch.rand(1, generator=self.gen).item() < 0.5:
                x = x.flip(2)
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            a, b = torch.randint(0, 2 * pad + 1, (2,), generator=self.gen).tolist()
            x = x[:, a:a + 32, b:b + 32]
            return (x.float() / 255.0 - self.mean) / self.std, labels[i]

    return PerSample()


def _rate(loader, limit: int | None = None) -> float:
    """Images per second over one pass of `loader` (stopping after `limit` images)."""
    seen, start = 0, time.perf_counter()
    for x, _ in loader:
        seen += len(x)
        if limit and seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def run(mode: Mode) -> Result:
    import torch

    from cnnlab.data import BatchLoader, Split, build_augmentation

    n = mode.pick(20_000, 50_000, smoke=1024)
    per_sample_n = mode.pick(4_000, 5_000, smoke=256)
    batch, repeats = 256, mode.pick(5, 7, smoke=2)
    base_rss = _current_rss_bytes()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    loader = BatchLoader(Split(images, labels), batch, shuffle=True, seed=0, mean=mean, std=std,
                         augment=build_augmentation("flip,crop:4", None))
    epoch = [0]

    def batched() -> float:
        epoch[0] += 1
        loader.set_epoch(epoch[0])
        return _rate(loader)

    batched()
    batched_peak = _peak_rss_bytes()  # the uint8 set plus a few batches, before the baseline allocates
    per_sample = torch.utils.data.DataLoader(_per_sample_dataset(images, labels, mean, std), batch_size=batch,
                                             shuffle=True, num_workers=0)
    stats = interleaved({"batched": batched, "per_sample": lambda: _rate(per_sample, per_sample_n)}, repeats)
    speedup = paired_ratio(stats["batched"], stats["per_sample"])
    figures = {"images": n, "per_sample_images_timed": per_sample_n, "batch": batch, "threads": mode.threads,
               "batched_images_per_s": stats["batched"].to_dict(0),
               "per_sample_images_per_s": stats["per_sample"].to_dict(0), "speedup": speedup.to_dict(2),
               "uint8_bytes": images.numel(), "rss_before_data_bytes": base_rss,
               "peak_rss_batched_bytes": batched_peak, "peak_rss_over_base_bytes": batched_peak - base_rss}
    mib = 2 ** 20
    rows = [(f"batched pipeline vs per-sample Dataset + DataLoader, same tensor ops (flip + crop:4 + normalise), "
             f"{n:,} × 3×32×32, batch {batch}",
             f"{stats['batched'].median:,.0f} vs {stats['per_sample'].median:,.0f} images/s: **{fmt_ratio(speedup)}**"),
            ("data pipeline memory", f"{(batched_peak - base_rss) / mib:,.1f} MiB above the interpreter for a "
                                     f"{images.numel() / mib:,.1f} MiB uint8 set (no float copy)")]
    checks = [Check("batched / per-sample speed-up", speedup.median, ">=", 3.0),
              Check("peak RSS above base / uint8 size", (batched_peak - base_rss) / images.numel(), "<=", 1.5,
                    "no float copy of the set (a float32 copy alone would be 4×)")]
    return Result(NAME, "Data pipeline", figures, rows, checks)
