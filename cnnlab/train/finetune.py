"""Fine-tuning set-up for train(): the transfer options of TrainConfig (--init, --init-sha256, --freeze, --bn,
--lr-mult, --unfreeze-every) applied around model building, kept here so run.py only calls in.

- published weights (--init imagenet / torchvision:NAME) bring their preprocessing: images resized to 256 and
  centre-cropped to 224 (unless --image-size is given), RGB (unless --channels is given), ImageNet mean/std,
  and the model options they need (GoogLeNet's transform_input);
- a run directory brings its own normalisation and class names (a head trained on other classes is
  re-initialised even when the count matches);
- the weights are read before the data (a bad --init fails at once) and loaded after the model is built;
  a resumed run with a checkpoint does not read them again (the checkpoint holds the weights);
- freezing and per-stage learning rates are checked against the model's stages before anything runs.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import CnnlabWarning, ConfigError
from ..transfer import catalogue
from ..transfer.freeze import StageFreezer, resolve_freeze, resolve_lr_mult
from ..transfer.weights import InitWeights, load_into, read_init
from .config import TrainConfig


def _note(message: str) -> None:
    warnings.warn(message, CnnlabWarning, stacklevel=3)


def published(cfg: TrainConfig) -> catalogue.PublishedWeights | None:
    """The published weights --init names, if it names any."""
    if cfg.init and catalogue.is_catalogue_spec(cfg.init):
        return catalogue.lookup(cfg.init, cfg.model)
    return None


def with_published_options(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """(config, note): the model options published weights need (e.g. GoogLeNet's transform_input=True),
    added where the user did not set them, so they are saved with the run."""
    entry = published(cfg)
    if entry is None:
        return cfg, ""
    extra = {k: v for k, v in entry.model_options.items() if k not in cfg.model_opts}
    if not extra:
        return cfg, ""
    opts = ", ".join(f"{k}={v}" for k, v in extra.items())
    return (cfg.replace(model_opts={**cfg.model_opts, **extra}),
            f"--init {cfg.init}: {cfg.model} built with {opts}, as torchvision's weights expect")


def data_geometry(cfg: TrainConfig) -> tuple[int | None, int | None, int | None]:
    """(image size to load at, channels, centre crop or None) — published weights' 256 → 224 crop and RGB
    where the user left --image-size / --channels unset."""
    entry = published(cfg)
    if entry is None:
        return cfg.image_size, cfg.channels, None
    pre = entry.preprocessing
    channels = cfg.channels or pre.channels
    if cfg.image_size is None:
        return pre.resize, channels, pre.crop
    return cfg.image_size, channels, None


def preprocessing_note(cfg: TrainConfig) -> str:
    entry = published(cfg)
    if entry is None:
        return ""
    pre = entry.preprocessing
    size = (f"resized to {pre.resize} and centre-cropped to {pre.crop} (pass --image-size N for another size)"
            if cfg.image_size is None else f"at --image-size {cfg.image_size}")
    return (f"--init {cfg.init}: images {size}, {'RGB' if (cfg.channels or 3) == 3 else 'grey'}, normalised with "
            f"ImageNet mean/std, as torchvision's {entry.name} weights expect")


def read_init_weights(cfg: TrainConfig) -> InitWeights:
    """Read --init now (downloading it if needed): before the data is loaded, so a bad source fails fast."""
    return read_init(cfg.init, cfg.model, sha256=cfg.init_sha256, offline=cfg.offline, open_run=_run_source)


def _run_source(path):
    """A run directory as an --init source: its final weights, classes and normalisation."""
    from ..runs import Run

    run = Run.open(path)
    pre = run.preprocess
    return run.resolve_weights("final"), run.classes, pre.mean, pre.std


def prepare_model(model: nn.Module, cfg: TrainConfig, dataset, init: InitWeights | None,
                  notes: bool = True) -> dict:
    """Load `init` into the freshly built `model`, check --lr-mult and apply --freeze (as at epoch 0).
    Returns what was done, for result.json ({"init": …, "freeze": …}); notes go through warnings."""
    info: dict = {}
    stage_names = tuple(getattr(model, "stage_names", ()))
    # The stage names are checked before the weights are loaded, so that a refusal is the only line shown
    # (not after a "loaded N of N tensors" note).
    if cfg.lr_mult:
        resolve_lr_mult(cfg.lr_mult, stage_names, repr(cfg.model))
    if cfg.freeze:
        resolve_freeze(cfg.freeze, stage_names, repr(cfg.model))
    if init is not None:
        reset = ""
        if init.classes is not None and list(init.classes) != list(dataset.classes):
            reset = (f"the source run was trained on classes {_short(init.classes)}, this data has "
                     f"{_short(dataset.classes)}")
        report = load_into(model, init.state, source=init.spec, reset_head=reset)
        info["init"] = {**report.summary(), "file": str(init.path)}
        if notes:
            _note(report.message())
    if cfg.freeze:
        freezer = StageFreezer(model, cfg.freeze, cfg.bn, cfg.unfreeze_every, repr(cfg.model))
        freezer.set_epoch(0)
        trainable, frozen = freezer.counts()
        info["freeze"] = {"stages": freezer.frozen, "bn": cfg.bn, "trainable_params": trainable,
                          "frozen_params": frozen, "unfreeze_every": cfg.unfreeze_every}
        if notes:
            _note(freezer.describe(cfg.freeze))
    return info


def normalisation(cfg: TrainConfig, dataset, init: InitWeights | None, run=None):
    """(mean, std) the loaders use: a resumed run's saved values; else the --init source's (the
    normalisation its weights were trained with), when it has as many channels as the data; else the
    training split's own statistics."""
    mean, std = dataset.channel_stats()
    channels = dataset.image_shape[0]
    if run is not None and cfg.init:
        pre = run.preprocess
        return torch.tensor(pre.mean), torch.tensor(pre.std)
    if init is None or init.mean is None:
        return mean, std
    if init.published is not None:
        m, s = init.published.preprocessing.normalisation(channels)
        return torch.tensor(m), torch.tensor(s)
    if len(init.mean) == channels:
        return torch.tensor(init.mean), torch.tensor(init.std)
    return mean, std


def make_freezer(model: nn.Module, cfg: TrainConfig) -> StageFreezer | None:
    """The trainer's StageFreezer (None without --freeze); gradual unfreezing cannot run under torchrun."""
    if not cfg.freeze:
        return None
    return StageFreezer(model, cfg.freeze, cfg.bn, cfg.unfreeze_every, repr(cfg.model))


def check_distributed(cfg: TrainConfig, dist) -> None:
    if cfg.unfreeze_every and dist.enabled:
        raise ConfigError("--unfreeze-every is not supported under torchrun: DistributedDataParallel fixes the set "
                          "of trained parameters when it starts")


def _short(names) -> str:
    names = list(names)
    return "[" + ", ".join(names[:6]) + (f", … {len(names)} in all]" if len(names) > 6 else "]")
