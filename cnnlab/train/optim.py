"""Optimizers with weight decay on weights only, and the learning-rate schedules as one small, exactly
resumable object (its whole state is the plateau scale; everything else is a function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, decay_bn_bias: bool = False,
                 lr_mult: dict[str, float] | None = None, include_frozen: bool = False) -> list[dict]:
    """Optimizer groups: weights (matrices, conv kernels) with weight decay; biases and normalisation
    parameters (every parameter with fewer than 2 dims: BN γ/β, biases, PReLU slopes) without, unless asked.

    `lr_mult` maps stage names (see ConvNet.stages: "stem", "stage1", …, "head"; "*" for the rest) to
    learning-rate multipliers (discriminative fine-tuning): each (stage multiplier × decay) pair becomes its
    own group carrying "lr_mult", which every schedule applies to its own learning rate.

    `include_frozen`: also put parameters with requires_grad=False in the groups (--freeze): they get no
    gradient, so the optimizer leaves them alone (decay and momentum included) until gradual unfreezing
    releases them, and the groups — hence a checkpoint's optimizer state — stay the same throughout."""
    mult_of: dict[int, float] = {}
    if lr_mult:
        default = float(lr_mult.get("*", 1.0))
        for name, stage in model.stages():
            for p in stage.parameters():
                mult_of[id(p)] = float(lr_mult.get(name, default))
    groups: dict[tuple[bool, float], dict] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad and not include_frozen:
            continue
        decay = decay_bn_bias or p.ndim >= 2
        mult = mult_of.get(id(p), 1.0)
        key = (decay, mult)
        if key not in groups:
            name = ("decay" if decay else "no_decay") + ("" if mult == 1.0 else f"@x{mult:g}")
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult,
                           "name": name}
        groups[key]["params"].append(p)
    if not lr_mult:  # the same two groups as always (an optimizer state saved earlier still loads)
        groups.setdefault((True, 1.0), {"params": [], "weight_decay": weight_decay, "lr_mult": 1.0,
                                        "name": "decay"})
    return sorted(groups.values(), key=lambda g: (g["name"] != "decay", g["name"]))


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr_mult: dict[str, float] | None = None
                    ) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over `param_groups`. AdamW's decay is decoupled; Adam's and
    SGD's is the classic L2 term added to the gradient. `lr_mult` defaults to --lr-mult; with --freeze the
    frozen parameters are in the groups too (see param_groups)."""
    if lr_mult is None and cfg.lr_mult:
        from ..transfer.freeze import parse_lr_mult

        lr_mult = parse_lr_mult(cfg.lr_mult)
    groups = param_groups(model, cfg.weight_decay, cfg.decay_bn_bias, lr_mult, include_frozen=bool(cfg.freeze))
    # a run resolves --lr by-model/auto before it builds its optimizer; built straight from a config, the
    # optimizer takes by-model's rate (schedules overwrite every group's rate at each step anyway)
    lr = default_lr(model, cfg.batch_size or LR_BATCH) if isinstance(cfg.lr, str) else cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def l1_weights(model: nn.Module) -> list[torch.Tensor]:
    """The parameters the L1 penalty applies to: the same 'weights only' set as weight decay."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def _cos_anneal(start: float, end: float, frac: float) -> float:
    """Cosine interpolation from `start` (frac 0) to `end` (frac 1)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac))


class LRSchedule:
    """Learning rate as a function of the global optimizer step (per-step granularity for every schedule):

    constant | warmup   lr
    step                lr · gamma^floor(epoch / step_size)
    exponential         lr · exp_gamma^floor(epoch)
    cosine              min_lr + (lr - min_lr)·½(1 + cos(π t/T))
    onecycle            cosine ramp lr/25 → lr over the first 30 %, then cosine anneal to lr/25e4 (Smith;
                        the LR curve of PyTorch's OneCycleLR with its defaults, without momentum cycling)
    cyclic              snapshot ensembling (Huang 2017): cosine from lr to 0 within each of M equal cycles
    plateau             lr · scale, scale ×= gamma after `plateau_patience` epochs without val improvement

    A linear warm-up over `warmup_epochs` multiplies any of them. Call `apply(optimizer, step)` before each
    step and `epoch_end(metric)` after each validation (plateau only).
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        if cfg.schedule == "warmup" and self.warmup == 0:
            self.warmup = self.steps_per_epoch  # 'warmup' alone: one epoch of warm-up
        self.scale = 1.0  # plateau state
        self.best: float | None = None
        self.bad_epochs = 0

    def lr_at(self, step: int) -> float:
        cfg, t, total = self.cfg, step, self.total
        base = cfg.lr
        epoch = t / self.steps_per_epoch
        if cfg.schedule == "step":
            lr = base * cfg.gamma ** math.floor(epoch / max(1, cfg.step_size))
        elif cfg.schedule == "exponential":
            lr = base * cfg.exp_gamma ** math.floor(epoch)
        elif cfg.schedule == "cosine":
            lr = cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
        elif cfg.schedule == "onecycle":  # exactly torch.optim.lr_scheduler.OneCycleLR's default LR curve
            peak_step = 0.3 * total - 1  # pct_start 0.3; the peak is reached at this (fractional) step
            lo, end = base / 25.0, base / 25.0 / 1e4  # div_factor 25, final_div_factor 1e4
            if 0 < peak_step and t <= peak_step:
                lr = _cos_anneal(lo, base, t / peak_step)
            else:
                lr = _cos_anneal(base, end, min(1.0, (t - peak_step) / (total - 1 - peak_step)))
        elif cfg.schedule == "cyclic":
            cycle = total / cfg.snapshots
            lr = base * 0.5 * (1 + math.cos(math.pi * (t % cycle) / cycle))
        else:  # constant, warmup, plateau
            lr = base
        if self.warmup and t < self.warmup:
            lr *= (t + 1) / self.warmup
        return lr * self.scale

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set each group's learning rate to the schedule's value times the group's own "lr_mult" (1 when it
        has none); returns the schedule's (unscaled) value."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def epoch_end(self, metric: float, higher_is_better: bool = True) -> None:
        """Plateau bookkeeping: after `plateau_patience` epochs without improvement, scale ×= gamma."""
        if self.cfg.schedule != "plateau":
            return
        improved = self.best is None or (metric > self.best if higher_is_better else metric < self.best)
        if improved:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.plateau_patience:
            self.scale *= self.cfg.gamma
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": float(self.scale), "best": float("nan") if self.best is None else float(self.best),
                "bad_epochs": int(self.bad_epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = None if math.isnan(state["best"]) else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])




# --lr by-model (the default): the peak learning rate follows the network and the batch size, because one
# rate does not train every family. Measured (benchmarks/defaults.py, time_to_accuracy.py; README
# "Training defaults"): at the high rate, VGG-11 and LeNet-5 with ReLU + max-pool die at chance level (a
# unit whose ReLU input went negative for every image stops learning for good) and VGG-11-BN, whose
# 4096-wide ReLU classifier has no normalisation, swings to a loss of ~9 and ends at 56 % (0.9944 at the
# low rate, with init_fc_classifier's small last FC), while the LeNets' bounded tanh units and nets whose
# every ReLU follows a normalisation layer (ResNet, MobileNet, GoogLeNet) train at that rate and reach a
# target in the fewest epochs. So such a net takes LR_HIGH, any other LR_LOW. Both are per 32 images of
# batch and grow linearly with it (Goyal et al. 2017): LeNet-5 on USPS reaches 95 % in the same epochs at
# 64 with 0.2, while 0.3 at 32 leaves it short of 98 % on the digits.
LR_HIGH = 0.1
LR_LOW = 0.02
LR_BATCH = 32  # the batch size the two rates are for
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_UNBOUNDED = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
              nn.Softplus)


def unnormalised_units(model: nn.Module) -> list[str]:
    """Names of the ReLU-like activation modules not directly preceded by a normalisation layer, in the
    order the modules are registered (the order of a conv-bn-act block, a VGG classifier's Linear-ReLU)."""
    found, previous = [], None
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: only the layers themselves have an order
        if isinstance(module, _UNBOUNDED) and not isinstance(previous, _NORMS):
            found.append(name)
        previous = module
    return found


def default_lr(model: nn.Module, batch_size: int = LR_BATCH) -> float:
    """--lr by-model: LR_HIGH when every ReLU-like unit follows a normalisation layer (or there are none:
    tanh/sigmoid nets), LR_LOW otherwise; times batch_size / 32."""
    return (LR_LOW if unnormalised_units(model) else LR_HIGH) * batch_size / LR_BATCH


# --batch-size's default (None): by the data. Larger batches cost less per image on a CPU (fewer kernel
# launches per image: LeNet-5's epoch on USPS costs ~25 % less CPU at 64 than at 32), but a small set then
# gets too few steps per epoch to learn in a few epochs (the digits' 1,078 images are 17 steps at 64 and
# LeNet-5 stalls near 97.5 %, where 32 reaches 98 %+). So: the largest of 128, 64, 32 that still gives
# MIN_STEPS_PER_EPOCH steps per epoch, and 32 below that.
BATCH_CHOICES = (128, 64, 32)
MIN_STEPS_PER_EPOCH = 64


def default_batch_size(train_images: int, world_size: int = 1) -> int:
    """The training batch size for `train_images` images shared by `world_size` processes (see above)."""
    per_process = train_images // max(1, world_size)
    for batch in BATCH_CHOICES:
        if per_process >= batch * MIN_STEPS_PER_EPOCH:
            return batch
    return BATCH_CHOICES[-1]


def resolve_batch_size(cfg, train_images: int, world_size: int = 1):
    """`cfg` (a TrainConfig) with --batch-size's default (None) replaced by the size chosen from the data, as
    a number (saved so that a resumed run keeps it); `cfg` itself when a size was given."""
    if cfg.batch_size is not None:
        return cfg
    return cfg.replace(batch_size=default_batch_size(train_images, world_size))
