"""The learning-rate range test (Smith 2017; fast.ai's lr_find): train a few hundred steps while the learning
rate grows exponentially from `start_lr` to `end_lr`, record the loss, smooth it, suggest a learning rate.

Suggestion rule: the LR of the smoothed-loss minimum divided by 10 (Smith 2017; fastai's `lr_min`). Two
more numbers are reported as cross-checks: fast.ai's "valley" (the longest stretch over which the smoothed
loss keeps falling, the LR a little past its first third) and the LR at the steepest descent. Measured on
the digits (100-step test from 1e-6 to 10, then 10 epochs of the defaults at that rate): LeNet-5 gets
valley 0.0056 → 95.0 % test accuracy, min/10 0.053 → 98.6 % (grid: 0.1 is best); LeNet-5 with ReLU +
max-pool valley 0.0013 → 96.9 %, min/10 0.012 → 99.2 % (grid: 0.02 trains, 0.1 collapses); a ReLU
notation net valley 4.9e-4, min/10 6.4e-3. The valley is 10-40× below the rates that train best; the
steepest point is fragile (a conv net without batch norm has its steepest dip in the noise at the start
of the curve: 4.5e-5, which trains to 0.69 on the digits, where 1e-2 trains to 0.97). The model's weights,
the optimizer state and the RNG states are restored afterwards, so the test leaves everything as it found it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig


@dataclass
class LRFindResult:
    """The curve (lrs, raw and smoothed losses) and the suggestions (`suggestion` is the minimum / 10)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    steepest: float
    min_over_10: float
    valley: float = float("nan")
    plot: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def suggestion(self) -> float:
        return self.min_over_10


def range_test(model: nn.Module, optimizer: torch.optim.Optimizer, loader, criterion: nn.Module, *,
               start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200, beta: float = 0.98,
               diverge: float = 4.0) -> LRFindResult:
    """Run the range test on (model, optimizer, loader) and restore all three's state afterwards. The loss is
    the training objective (with a model's auxiliary heads, as the trainer computes it)."""
    from .trainer import training_loss

    aux_weight = float(getattr(model, "aux_loss_weight", 0.3))
    check_range(start_lr, end_lr, steps)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_rng = torch.get_rng_state()
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    try:
        model.train()
        it, epoch = iter(loader), 0
        for i in range(steps):
            try:
                x, y = next(it)
            except StopIteration:
                epoch += 1
                loader.set_epoch(epoch)
                it = iter(loader)
                x, y = next(it)
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            loss, _ = training_loss(model(x), y, criterion, aux_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())  # one sync per step is inherent to this test: the curve is the product
            if not math.isfinite(value):
                break
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))  # bias-corrected exponential moving average
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            if i > 10 and smooth > diverge * best:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        torch.set_rng_state(saved_rng)
        loader.set_epoch(0)
    if len(lrs) < 5:
        raise ConfigError("lr-find: the loss diverged at once; lower --start-lr")
    return LRFindResult(lrs, losses, smoothed, *suggest(lrs, smoothed), valley=valley(lrs, smoothed))


def check_range(start_lr: float, end_lr: float, steps: int) -> None:
    """The range test's own options: finite learning rates 0 < start < end, at least 10 steps."""
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise ConfigError(f"lr-find needs finite learning rates 0 < start-lr < end-lr, got {start_lr} and {end_lr}")
    if steps < 10:
        raise ConfigError(f"lr-find needs at least 10 steps, got {steps}")


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(LR of steepest descent of the smoothed loss vs log LR, LR of the smoothed minimum / 10)."""
    log_lr = np.log10(np.asarray(lrs))
    s = np.asarray(smoothed)
    imin = int(np.argmin(s))
    grad = np.gradient(s, log_lr)
    lo = max(1, len(s) // 20)  # skip the first few points: the smoother is still warming up there
    hi = max(imin, lo + 1)
    steep = lo + int(np.argmin(grad[lo:hi])) if hi > lo else imin
    return float(lrs[steep]), float(lrs[imin] / 10)


def valley(lrs: list[float], smoothed: list[float]) -> float:
    """fast.ai's valley rule (fastai.callback.schedule.valley, by ESRI): the longest run of falling smoothed
    losses, found as a longest decreasing subsequence, and the LR at start + ⌊s/3⌋ + ⌊s/6⌋ of its span s —
    roughly two thirds down the valley, where the descent is steep and safely before the minimum."""
    n = len(smoothed)
    lds = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[end] < lds[i]:  # inside the inner loop, as in fastai: the span is fixed when first exceeded
                end = i
                start = end - lds[end]
    third = (end - start) / 3
    return float(lrs[min(n - 1, max(0, start + int(third) + int(third / 2)))])


def plot_curve(result: LRFindResult, path: str | Path, title: str = "") -> Path:
    """Loss vs learning rate (log x), both suggestions marked; PNG via matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
    ax.axvline(result.valley, color="C0", ls="-", label=f"valley {result.valley:.2e}")
    ax.axvline(result.steepest, color="C3", ls="--", label=f"steepest descent {result.steepest:.2e}")
    ax.axvline(result.min_over_10, color="C2", ls=":", label=f"min / 10 (suggested) {result.min_over_10:.2e}")
    ax.set_xscale("log")
    top = np.percentile(result.smoothed, 95) * 1.3
    ax.set_ylim(min(min(result.smoothed), min(result.losses)) * 0.9, top)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning-rate range test")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def lr_find(config: TrainConfig | dict | None = None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            steps: int = 200, plot: str | Path | None = None, **overrides) -> LRFindResult:
    """Range test for the model/data/optimizer a TrainConfig describes (single process)."""
    from ..data import BatchLoader
    from .distributed import DistInfo
    from .optim import build_optimizer
    from .run import (build, build_augment, check_classes, fit_input, load_data, resolve_device,
                      resolve_start_defaults, set_threads)

    cfg = TrainConfig.resolve(config, overrides, "lr_find()")
    check_range(start_lr, end_lr, steps)  # before any data is loaded
    if plot is not None:
        from ..utils.io import check_output_file

        check_output_file(plot, "--plot")
    single = DistInfo()  # the range test runs in one process, on the device and threads training would use
    device = resolve_device(cfg.device, single)
    set_threads(cfg, single)
    torch.manual_seed(cfg.seed)
    dataset = load_data(cfg)
    check_classes(cfg, dataset)
    cfg, _ = fit_input(cfg, dataset)  # the same padding/resizing training would apply
    dataset = load_data(cfg)
    cfg = resolve_start_defaults(cfg, dataset, device)  # the batch size and memory format training would use
    model = build(cfg, dataset).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = build_augment(cfg, dataset)
    mean, std = dataset.channel_stats()
    loader = BatchLoader(dataset.train, cfg.batch_size, shuffle=True, seed=cfg.seed, mean=mean, std=std,
                         augment=augment, device=device, channels_last=cfg.channels_last)
    optimizer = build_optimizer(model, cfg.replace(lr=start_lr))  # the test sets every step's rate itself
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result = range_test(model, optimizer, loader, criterion, start_lr=start_lr, end_lr=end_lr, steps=steps)
    if plot is not None:
        result.plot = plot_curve(result, plot, f"lr-find: {cfg.model} on {cfg.data} ({cfg.optimizer})")
    return result
