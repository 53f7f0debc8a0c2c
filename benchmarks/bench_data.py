"""Images/s of cnnlab's batched in-memory pipeline vs a per-sample torch Dataset + DataLoader doing the
same work (flip + crop:4 + normalise) on 32×32 colour images, and peak resident memory vs the uint8 size.

The per-sample baseline is the standard recipe (torchvision's RandomHorizontalFlip + RandomCrop(32, 4) +
Normalize, written on uint8 tensors so no PIL conversion is charged to it), collated by a DataLoader;
`--workers N` also gives it N worker processes.

Usage: python benchmarks/bench_data.py [--n 50000] [--per-sample-n 5000] [--batch 256] [--threads 0]
       [--workers 0] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from cnnlab.data import BatchLoader, Split, build_augmentation


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class PerSample(torch.utils.data.Dataset):
    """The usual per-sample pipeline: one image at a time in Python, collated by the DataLoader."""

    def __init__(self, images, labels, mean, std, pad=4, seed=0):
        self.images, self.labels, self.pad = images, labels, pad
        self.mean, self.std = mean.view(3, 1, 1), std.view(3, 1, 1)
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        if torch.rand(1, generator=self.gen).item() < 0.5:
            x = x.flip(2)
        p = self.pad
        x = torch.nn.functional.pad(x, (p, p, p, p))
        a, b = torch.randint(0, 2 * p + 1, (2,), generator=self.gen).tolist()
        x = x[:, a:a + 32, b:b + 32]
        x = (x.float() / 255.0 - self.mean) / self.std
        return x, self.labels[i]


def run(loader, limit=None) -> tuple[float, int]:
    """(images per second, images seen) over one pass of `loader`, stopping after `limit` images."""
    seen, t0 = 0, time.perf_counter()
    for x, _ in loader:
        seen += len(x)
        if limit and seen >= limit:
            break
    return seen / (time.perf_counter() - t0), seen


def print_table(rows: list[tuple[str, str]]) -> None:
    """Two aligned columns; the first row is the header."""
    width = max(len(r[0]) for r in rows)
    for i, (k, v) in enumerate(rows):
        print(f"{k:<{width}}  {v:>14}")
        if i == 0:
            print("-" * (width + 16))


def main(argv=None) -> dict:
    """Run both pipelines in one process, print the table, return (and optionally write) the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="synthetic images (default 50,000)")
    ap.add_argument("--per-sample-n", type=int, default=5_000, help="images timed for the per-sample loader")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed rounds, each one batched epoch then one per-sample pass (best of each kept: "
                         "interleaving lets both see the same load on a shared machine)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default 0: what `cnnlab train` picks, the cores idle at start; "
                         "on a busy machine OpenMP's spin-waits make small batch ops far slower with more)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for the per-sample "
                    "baseline (default 0)")
    ap.add_argument("--json", help="also write results as JSON here")
    args = ap.parse_args(argv)
    from cnnlab.train.run import auto_threads

    torch.set_num_threads(args.threads or auto_threads())

    base_rss = current_rss_bytes()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.n,), generator=gen)
    split = Split(images, labels)
    uint8_bytes = images.numel()
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)

    aug = build_augmentation("flip,crop:4", None)
    loader = BatchLoader(split, args.batch, shuffle=True, seed=0, mean=mean, std=std, augment=aug)
    loader.set_epoch(0)
    run(loader)  # warm-up epoch
    batched_peak = peak_rss_bytes()  # the uint8 set plus a few batches, before the baseline runs

    ds = PerSample(images, labels, mean, std)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                     persistent_workers=args.workers > 0)
    run(dl, args.batch * 4)  # warm-up (and, with workers, start them outside the timed passes)
    batched_rates, per_sample_rates = [], []
    for r in range(args.rounds):
        loader.set_epoch(r + 1)
        batched_rates.append(run(loader)[0])
        per_sample_rates.append(run(dl, args.per_sample_n)[0])
    batched, per_sample = max(batched_rates), max(per_sample_rates)

    res = {"images": args.n, "batch": args.batch, "threads": torch.get_num_threads(),
           "per_sample_workers": args.workers, "rounds": args.rounds,
           "batched_img_per_s": round(batched), "per_sample_img_per_s": round(per_sample),
           "speedup": round(batched / per_sample, 1), "uint8_bytes": uint8_bytes,
           "rss_before_data_bytes": base_rss, "peak_rss_batched_bytes": batched_peak,
           "peak_rss_over_base_bytes": batched_peak - base_rss}
    mb = 1 / 2**20
    rows = [("pipeline", "images/s"), ("batched (cnnlab BatchLoader)", f"{batched:,.0f}"),
            (f"per-sample Dataset+DataLoader ({args.workers} workers)", f"{per_sample:,.0f}"),
            ("speed-up", f"{batched / per_sample:.1f}×"),
            ("torch threads", f"{torch.get_num_threads()}"),
            ("dataset uint8 size", f"{uint8_bytes * mb:,.1f} MiB"),
            ("RSS before data (torch etc.)", f"{base_rss * mb:,.1f} MiB"),
            ("peak RSS, batched run", f"{batched_peak * mb:,.1f} MiB"),
            ("peak RSS above base", f"{(batched_peak - base_rss) * mb:,.1f} MiB")]
    print_table(rows)
    if args.json:
        from cnnlab.utils.io import write_json_atomic
        write_json_atomic(args.json, res)
    return res


if __name__ == "__main__":
    main()
