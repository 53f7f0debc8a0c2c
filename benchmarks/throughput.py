"""Training throughput: cnnlab's loop (`cnnlab.train`, its in-memory loader, schedule, meters and checks)
against a bare PyTorch loop over pre-loaded, pre-normalised float tensors, with the same LeNet-5, batch
64, optimizer, loss, threads and precision, on MNIST-sized synthetic 1×32×32 uint8 images.

Both sides run in one process, taking turns epoch by epoch: the bare epoch runs inside cnnlab's own
epoch hooks, before cnnlab's epoch on even rounds and after it on odd ones. cnnlab's time is the
training time it reports itself (`images_per_s`; its per-epoch validation is not counted), the bare
loop's is its own epoch. Goal (issue 16): ratio ≥ 0.9.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .harness import Check, Mode, Result, Stats, fmt_ratio, paired_ratio

NAME = "throughput"
BATCH = 64


def _synthetic_npz(folder: Path, n_train: int, seed: int = 0) -> Path:
    """An .npz of random uint8 1×32×32 images: train (which cnnlab splits 75/25 into train/val) and a
    tiny test split."""
    g = np.random.default_rng(seed)
    path = folder / "synthetic32.npz"
    n = n_train * 4 // 3  # cnnlab carves a quarter of it for validation (fractions 0.6 : 0.2)
    np.savez(path, x=g.integers(0, 256, (n, 1, 32, 32), dtype=np.uint8), y=np.arange(n) % 10,
             x_test=g.integers(0, 256, (64, 1, 32, 32), dtype=np.uint8), y_test=np.arange(64) % 10)
    return path


def measure(mode: Mode, device: str, amp: str, rounds: int, n_train: int) -> dict:
    """Images/s of both sides over `rounds` alternating epoch pairs (after one warm-up pair)."""
    import torch
    import torch.nn.functional as F

    from cnnlab.data import load_dataset
    from cnnlab.errors import CnnlabWarning
    from cnnlab.models import build_model
    from cnnlab.train import TrainConfig, train
    from cnnlab.train.config import resolve_channels_last
    from cnnlab.train.optim import default_lr

    cfg = TrainConfig()
    dev = torch.device(device)
    # the memory format cnnlab picks by default here, for both sides: this compares loops, not layouts
    layout = torch.channels_last if resolve_channels_last(cfg.replace(amp=amp), dev.type).channels_last \
        else torch.contiguous_format
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        data = _synthetic_npz(Path(tmp), n_train)
        ds = load_dataset(str(data), seed=cfg.seed)
        mean, std = ds.channel_stats()
        x = ((ds.train.images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).to(dev)
        x = x.contiguous(memory_format=layout)
        y = ds.train.labels.to(dev)
        torch.manual_seed(0)
        bare = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32)).to(dev)
        bare = bare.to(memory_format=layout)
        # cnnlab's optimizer for LeNet-5 (SGD + Nesterov, weight decay on weights only: LeNet's biases
        # are few) and its loss with label smoothing: the bare loop does the same arithmetic per step.
        lr = default_lr(bare, BATCH) if isinstance(cfg.lr, str) else cfg.lr  # --lr by-model's for LeNet-5
        opt = torch.optim.SGD(bare.parameters(), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
        autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if amp == "bf16" else \
            contextlib.nullcontext
        bare_rates: list[float] = []

        def bare_epoch() -> None:
            bare.train()
            sync()
            start = time.perf_counter()
            perm = torch.randperm(len(y), device=dev)
            for i in range(0, len(y), BATCH):
                idx = perm[i:i + BATCH]
                with autocast():
                    loss = F.cross_entropy(bare(x[idx]).float(), y[idx], label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync()
            bare_rates.append(len(y) / (time.perf_counter() - start))

        def before(trainer) -> None:
            if trainer.epoch % 2 == 0:
                bare_epoch()

        def after(trainer, record) -> None:
            if (record["epoch"] - 1) % 2 == 1:
                bare_epoch()

        # Random labels: the run's closing line and its chance-level warning are expected, not figures.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", CnnlabWarning)
            result = train(model="lenet5", data=str(data), epochs=rounds + 1, batch_size=BATCH,
                           threads=mode.threads, device=device, amp=amp, quiet=True, out=str(Path(tmp) / "run"),
                           hooks={"epoch_start": [before], "epoch_end": [after]})
    ours = [r["images_per_s"] for r in result.history][1:]  # the first pair is the warm-up
    theirs = bare_rates[1:]
    cnnlab_stats, bare_stats = Stats.of(ours), Stats.of(theirs)
    return {"device": device, "amp": amp, "channels_last": layout is torch.channels_last,
            "batch": BATCH, "train_images": len(y), "rounds": rounds,
            "cnnlab_images_per_s": cnnlab_stats.to_dict(1), "bare_images_per_s": bare_stats.to_dict(1),
            "ratio": paired_ratio(cnnlab_stats, bare_stats).to_dict(3)}


def run(mode: Mode) -> Result:
    import torch

    rounds = mode.pick(4, 8, smoke=2)
    n_train = mode.pick(8192, 16384, smoke=512)
    figures = {"cpu_fp32": measure(mode, "cpu", "none", rounds, n_train)}
    if torch.cuda.is_available():
        figures["cuda_bf16"] = measure(mode, "cuda", "bf16", rounds, mode.pick(32768, 65536, smoke=512))
        figures["cuda_bf16"]["device_name"] = torch.cuda.get_device_name(0)
    rows, checks = [], []
    for key, f in figures.items():
        ratio = Stats(**{k: f["ratio"][k] for k in ("median", "low", "high", "samples")})
        where = (f"{f.get('device_name', 'CPU')}, {'bf16 autocast' if f['amp'] == 'bf16' else 'fp32'}"
                 f"{', channels-last' if f.get('channels_last') else ''}")
        rows.append((f"training throughput, LeNet-5, batch {f['batch']}, {where}: cnnlab vs bare loop over "
                     f"pre-loaded tensors ({f['train_images']:,} images, {f['rounds']} alternating epochs)",
                     f"{f['cnnlab_images_per_s']['median']:,.0f} vs {f['bare_images_per_s']['median']:,.0f} "
                     f"images/s: **{fmt_ratio(ratio)}**"))
        checks.append(Check(f"throughput ratio cnnlab / bare ({where})", f["ratio"]["median"], ">=", 0.9))
    return Result(NAME, "Training throughput against a bare loop", figures, rows, checks)
