"""`train(config)`: everything around the loop — device and threads, data, model, the run directory (through
cnnlab.runs), resume, the final test score and result files. The CLI's `cnnlab train` is a thin front over
this; nothing here prints (notes go through `warnings`, progress through the optional progress display)."""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import CnnlabError, ConfigError
from ..utils.io import DISK_FULL
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig, resolve_channels_last
from .trainer import Trainer



@dataclass
class TrainResult:
    """What a finished run reports (also written to RUN/result.json)."""

    run_dir: Path | None
    test_accuracy: float
    epochs: int
    seconds: float
    params: int
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None


def resolve_device(name: str, dist: distributed.DistInfo) -> torch.device:
    """--device: cpu, this rank's CUDA device, or (auto) CUDA when available."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (this torch build or machine is CPU-only)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())


def idle_cores(interval: float = 0.1) -> float | None:
    """How many cores sat idle over the next `interval` seconds, from /proc/stat (Linux); None elsewhere.
    Sampled rather than read from the load average, which lags a minute behind."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (idle1 - idle0) / (total1 - total0) * (os.cpu_count() or 1)


def auto_threads(local_world_size: int = 1) -> int:
    """Intra-op threads for `--threads 0`: this process's share of the cores that are idle right now.

    Measured on 2 cores with LeNet-5: idle, two threads train in 2.6 s against 3.4 s for one; with one core
    busy elsewhere, two threads take 9.4 s and one 3.3 s, because OpenMP's threads spin-wait for a core
    that is not free."""
    cores = os.cpu_count() or 1
    free = idle_cores()
    if free is None:
        try:
            free = cores - os.getloadavg()[0]
        except OSError:  # neither /proc/stat nor a load average on this platform
            free = cores
    return max(1, min(cores // local_world_size, round(free) // local_world_size))


def set_threads(cfg: TrainConfig, dist: distributed.DistInfo) -> None:
    """--threads N, else auto_threads (torchrun's own OMP_NUM_THREADS, when set, wins)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not (dist.local_world_size > 1 and "OMP_NUM_THREADS" in os.environ):
        torch.set_num_threads(auto_threads(dist.local_world_size))


def load_data(cfg: TrainConfig, classes: list[str] | None = None):
    """The dataset --data names, split, resized and padded as the config says (also what `cnnlab data show`'s
    options name); `classes` (a run's saved class list) fixes the labels so a resumed or evaluated run
    reads the data as it was trained."""
    from ..data import load_dataset
    from .finetune import data_geometry

    size, channels, crop = data_geometry(cfg)  # published --init weights: 256 resize, 224 crop, RGB
    dataset = load_dataset(cfg.data, image_size=size, channels=channels, seed=cfg.seed,
                           data_dir=cfg.data_dir, offline=cfg.offline, limit_per_class=cfg.limit_per_class,
                           resize=cfg.resize, classes=classes)
    if crop:
        _centre_crop(dataset, crop)
    if cfg.pad:
        from ..data.dataset import Split

        p = (cfg.pad,) * 4
        for name in ("train", "val", "test"):
            split = getattr(dataset, name)
            setattr(dataset, name, Split(torch.nn.functional.pad(split.images, p), split.labels))
    return dataset


def _centre_crop(dataset, size: int) -> None:
    """Crop every split's images to their central size×size pixels (in place of the dataset's splits)."""
    from ..data.dataset import Split

    for name in ("train", "val", "test"):
        split = getattr(dataset, name)
        h, w = split.images.shape[2:]
        top, left = (h - size) // 2, (w - size) // 2
        images = split.images[:, :, top:top + size, left:left + size].contiguous()
        setattr(dataset, name, Split(images, split.labels))


def fit_input(cfg: TrainConfig, dataset) -> tuple[TrainConfig, str]:
    """(config, note): when a registered model with a fixed input is too large for the data's images, the
    config that pads or resizes them to the model's input, and a one-line note saying so.

    Pad when the model's input is at most a quarter larger (LeNet-5's 32x32 on MNIST's 28x28: LeCun et al.
    centred the digits in a 32x32 field, so 2 pixels of background per side is the paper's own recipe); resize
    when it is larger still (AlexNet's 227x227 from 28x28 images: padding would leave the digit a speck)."""
    from ..errors import GeometryError
    from ..layers import meta_device
    from ..models import build_model, model_info
    from ..models.registry import is_notation

    if is_notation(cfg.model):
        return cfg, ""
    c, h, w = dataset.image_shape
    try:
        with meta_device():
            build_model(cfg.model, num_classes=dataset.num_classes, in_channels=c, input_size=(h, w),
                        **model_options(cfg))
        return cfg, ""
    except GeometryError:
        th, tw = model_info(cfg.model).input_size
        if th < h or tw < w:
            raise
    if th - h == tw - w and (th - h) % 2 == 0 and th - h <= th // 4:
        pad = (th - h) // 2
        return cfg.replace(pad=cfg.pad + pad), (f"{cfg.model} takes {th}x{tw} images; the {h}x{w} images are "
                                                f"zero-padded by {pad} pixels per side (saved as pad={cfg.pad + pad})")
    if th != tw:
        raise GeometryError(f"{cfg.model} takes {th}x{tw} images; the data's are {h}x{w}: pass --image-size")
    return cfg.replace(image_size=th), (f"{cfg.model} takes {th}x{tw} images; the {h}x{w} images are resized to "
                                        f"{th}x{tw} (saved as image_size={th})")


def build_augment(cfg: TrainConfig, dataset):
    """The batch augmentation --augment describes (None without it)."""
    if not cfg.augment:
        return None
    from ..data.augment import build_augmentation

    return build_augmentation(cfg.augment, dataset)


def model_options(cfg: TrainConfig) -> dict:
    """--model-opt values plus --dropout / --drop-path-rate, checked against what the model accepts."""
    from ..models import model_info
    from ..models.registry import is_notation

    opts = dict(cfg.model_opts)
    known = None if is_notation(cfg.model) else model_info(cfg.model).options
    for name, label in (("dropout", "a dropout"), ("drop_path_rate", "a stochastic-depth (drop_path_rate)")):
        value = getattr(cfg, name)
        if value is None:
            continue
        if known is not None and name not in known:
            raise ConfigError(f"model {cfg.model!r} has no {label} option; its options: "
                              f"{', '.join(known) or 'none'}")
        opts[name] = value
    return opts


def check_classes(cfg: TrainConfig, dataset) -> None:
    """Refuse data with a single class before anything else is done with it: a classifier needs two."""
    from ..data.sources import SOURCES
    from ..errors import DataError
    from ..utils.limits import short_text

    if dataset.num_classes < 2:
        where = cfg.data if cfg.data in SOURCES else short_text(cfg.data, 300)
        raise DataError(f"{where}: a single class ({short_text(dataset.classes[0], 40)!r}); a classifier needs "
                        f"at least 2 classes")


def resolve_start_defaults(cfg: TrainConfig, dataset, device: torch.device, world_size: int = 1) -> TrainConfig:
    """`cfg` with the defaults that are chosen when a run starts made values: --batch-size by the data,
    --channels-last by the device; then checked to fit in memory. Training and lr-find both take this, so
    the range test runs what training would."""
    from .optim import resolve_batch_size

    cfg = resolve_batch_size(cfg, len(dataset.train), world_size)
    cfg = resolve_channels_last(cfg, device.type)
    check_trainable(cfg, dataset)
    return cfg


def check_trainable(cfg: TrainConfig, dataset) -> None:
    """Refuse what cannot train, before the model is built for real or a run directory exists: data with a
    single class, and a model whose training state (weights, gradients, optimizer slots, EMA copy and one
    batch's activations, float32) would need more memory than the machine has."""
    from ..models.footprint import activation_elements, check_buildable, state_bytes
    from ..utils.limits import check_memory, short_int, short_text

    check_classes(cfg, dataset)
    c, h, w = dataset.image_shape
    model = check_buildable(cfg.model, num_classes=dataset.num_classes, in_channels=c, input_size=(h, w),
                            **model_options(cfg))
    if model is None:
        return
    slots = {"sgd": 1 if cfg.momentum else 0, "adam": 2, "adamw": 2}.get(cfg.optimizer, 2)
    weights = state_bytes(model) * (2 + slots + int(cfg.ema))
    from .optim import resolve_batch_size

    # --batch-size unset: the size training will choose (experiments' and sweeps' preflight checks before that)
    batch = min(resolve_batch_size(cfg, len(dataset.train)).batch_size, len(dataset.train))  # never above the split
    activations = activation_elements(model, (c, h, w)) * 4 * 2 * batch
    check_memory(weights + activations, f"training {short_text(cfg.model)!r} on {c}x{h}x{w} images in batches "
                                        f"of {short_int(batch)}")


def build(cfg: TrainConfig, dataset, *, init=True, report: dict | None = None, notes: bool = True) -> nn.Module:
    """The model --model names, shaped for the dataset's images and classes; started from the --init weights
    and with its --freeze stages frozen (cnnlab.train.finetune). `init`: the weights already read
    (finetune.read_init_weights), True to read them here, False not to load them (a resumed run's checkpoint
    holds its weights). `report` receives what loading and freezing did."""
    from ..models import build_model
    from .finetune import prepare_model, read_init_weights

    c, h, w = dataset.image_shape
    model = build_model(cfg.model, num_classes=dataset.num_classes, in_channels=c, input_size=(h, w),
                        **model_options(cfg))
    if cfg.init and init is True:
        init = read_init_weights(cfg)
    info = prepare_model(model, cfg, dataset, init if cfg.init and init is not False else None, notes)
    if report is not None:
        report.update(info)
    return model


RESUME_OVERRIDES = ("quiet", "threads", "device")  # how a run is shown or where it runs, not what it computes


def train(config: TrainConfig | dict | None = None, *, resume: str | Path | None = None,
          hooks: dict[str, list[Callable]] | None = None, **overrides) -> TrainResult:
    """Train a model as `config` says (TrainConfig, a dict of its fields, or keyword overrides) and return
    the result; `resume=RUN_DIR` continues an interrupted run from its last checkpoint instead (keyword
    overrides are then limited to quiet, threads and device). Raises TrainingInterrupted on Ctrl-C after
    checkpointing; reports through the result, the hooks, `warnings` and the optional progress display."""
    from ..runs import Run, check_writable

    wall = time.perf_counter()
    run = None
    if resume is not None:
        run = Run.open(resume)
        refused = sorted(set(overrides) - set(RESUME_OVERRIDES))
        if refused:
            raise ConfigError(f"--resume continues a run with its saved configuration; only "
                              f"{', '.join(RESUME_OVERRIDES)} may change (got {', '.join(refused)})")
        cfg = run.config.replace(**overrides).validate()
    else:
        cfg = TrainConfig.resolve(config, overrides, "train()")
        if cfg.out:
            check_writable(cfg.out)
    dist = distributed.env_info()
    device = resolve_device(cfg.device, dist)
    dist = distributed.setup(device.type)
    try:
        result = _train(cfg, dist, device, run, hooks, wall)
    except BaseException:
        distributed.teardown(finished=False)
        raise
    distributed.teardown()
    return result


def _note(message: str) -> None:
    from ..errors import CnnlabWarning

    warnings.warn(message, CnnlabWarning, stacklevel=3)


def _train(cfg: TrainConfig, dist, device, run, hooks, wall: float) -> TrainResult:
    from .. import runs
    from ..data import BatchLoader
    from . import finetune

    set_threads(cfg, dist)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    finetune.check_distributed(cfg, dist)
    init = None  # --init: read before the data (fails fast); a resumed run with a checkpoint does not need it
    if cfg.init and (run is None or ckpt.latest_info(run.path) is None):
        init = finetune.read_init_weights(cfg)
    if run is None:
        cfg, note = finetune.with_published_options(cfg)
        for line in (note, finetune.preprocessing_note(cfg)):
            if line and dist.is_main:
                _note(line)
    dataset = load_data(cfg, run.classes if run is not None else None)
    check_classes(cfg, dataset)
    if run is None:
        fitted, note = fit_input(cfg, dataset)
        if note:
            if dist.is_main:
                _note(note)
            cfg = fitted
            dataset = load_data(cfg)
    cfg = resolve_start_defaults(cfg, dataset, device, dist.world_size)
    transfer: dict = {}
    model = build(cfg, dataset, init=init or False, report=transfer, notes=dist.is_main).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = build_augment(cfg, dataset)
    mean, std = finetune.normalisation(cfg, dataset, init, run)
    if cfg.lr == "by-model":  # resumed runs saved the number chosen
        from .optim import default_lr

        cfg = cfg.replace(lr=default_lr(model, cfg.batch_size))
    if cfg.lr == "auto":  # resumed runs saved the value found, so this runs once per run
        cfg = cfg.replace(lr=auto_lr(cfg, model, dataset, augment, mean, std, device))
        if dist.is_main:
            _note(f"--lr auto: the range test picked {cfg.lr:.3g} for {cfg.model} (saved as lr in config.yaml)")
    common = dict(seed=cfg.seed, mean=mean, std=std, device=device, channels_last=cfg.channels_last,
                  rank=dist.rank, world_size=dist.world_size)
    loaders = {"train": BatchLoader(dataset.train, cfg.batch_size, shuffle=True, augment=augment, **common),
               "val": BatchLoader(dataset.val, cfg.eval_batch_size, **common),
               "test": BatchLoader(dataset.test, cfg.eval_batch_size, **common)}

    # Everything user-checkable has been checked: only now create/claim the run directory (under its lock).
    with contextlib.ExitStack() as stack:
        if run is not None:
            run_dir = run.path
            if dist.is_main:
                stack.enter_context(runs.run_lock(run_dir))
                runs.remove_leftovers(run_dir)  # temp files of writes killed with the previous process
        else:
            chosen: str | Exception = ""
            if dist.is_main:
                try:
                    chosen = str(stack.enter_context(runs.claim_run_dir(cfg.out, cfg, cfg.overwrite)))
                except ConfigError as exc:
                    chosen = exc
            chosen = distributed.broadcast_object(chosen)
            if isinstance(chosen, Exception):
                raise ConfigError(str(chosen))
            run_dir = Path(chosen)
        if run is None and dist.is_main:
            c, h, w = dataset.image_shape
            runs.write_run_config(run_dir, cfg, classes=list(dataset.classes), image_shape=(c, h, w),
                                  model_options=model_options(cfg), mean=mean, std=std,
                                  params=sum(p.numel() for p in model.parameters()),
                                  split_sizes={k: len(getattr(dataset, k)) for k in ("train", "val", "test")})
        trainer = Trainer(cfg, model, loaders, device=device, dist=dist, run_dir=run_dir, hooks=hooks)
        if run is not None and ckpt.latest_info(run_dir) is not None:
            trainer.load_checkpoint(run_dir)  # a damaged checkpoint is refused before the index hears of it
        # else: a run killed before its first checkpoint starts again from step 0 with its saved config
        recorder = None
        if dist.is_main:  # the runs index (RUNS_ROOT/index.sqlite) follows the run: running → finished/failed
            from ..tracking.record import RunRecorder

            recorder = RunRecorder(run_dir, cfg)
            recorder.started(model, dataset.image_shape, resumed=run is not None,
                             history=run.metrics if run is not None else None)
            trainer.hooks = {name: list(fns) for name, fns in recorder.with_hooks(trainer.hooks).items()}
        try:
            if dist.is_main and "init" in transfer:
                runs.write_init_report(run_dir, transfer["init"])
            trainer.fit()
            if cfg.init and "init" not in transfer:  # resumed from a checkpoint: the report saved when it started
                transfer["init"] = runs.read_init_report(run_dir)
            result = _finish(cfg, trainer, run_dir, dist, wall, transfer)
        except BaseException as exc:
            if recorder is not None:
                recorder.failed(exc)
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                raise RunWriteError(_write_failed(exc, run_dir)) from None
            raise
        if recorder is not None:
            recorder.finished(result.summary)
        return result


class RunWriteError(CnnlabError):
    """The run directory could not be written (a full disk or quota): the run stopped, its last good
    checkpoint intact, and `--resume` continues it once there is space."""


def _write_failed(exc: OSError, run_dir: Path) -> str:
    """One line: which file could not be written and why, the checkpoint that is kept, how to go on."""
    try:
        last = ckpt.latest_info(run_dir)
    except ConfigError:
        last = None
    kept = (f"the last good checkpoint (epoch {last['epoch'] + 1}, step {last['step']}) is kept" if last
            else "no checkpoint had been written yet")
    return (f"{exc.filename or run_dir}: cannot be written ({exc.strerror or exc}); the run stopped and {kept}; "
            f"free some space, then `cnnlab train --resume {run_dir}`")


def _finish(cfg: TrainConfig, trainer: Trainer, run_dir: Path, dist, wall: float,
            transfer: dict | None = None) -> TrainResult:
    """Score the kept weights on the test split, write the weights and result.json."""
    from .. import runs

    final = trainer.eval_module()
    test = trainer.evaluate("test", final)
    val = trainer.evaluate("val", final)
    params = sum(p.numel() for p in trainer.model.parameters())
    summary = {"model": cfg.model, "data": cfg.data, "test_accuracy": test["test_acc"], "test_loss": test["test_loss"],
               "test_count": test["test_count"], "val_accuracy": val["val_acc"], "val_count": val["val_count"],
               "epochs": trainer.epoch, "seconds": round(trainer.train_seconds, 3),
               "wall_seconds": round(time.perf_counter() - wall, 3), "params": params,
               "device": str(trainer.device), "world_size": dist.world_size,
               "weights": "ema" if cfg.ema_eval else "raw"}
    if "test_top5" in test:
        summary["test_top5"] = test["test_top5"]
    if trainer.history:
        summary["images_per_s"] = round(sum(r["images_per_s"] for r in trainer.history) / len(trainer.history), 1)
    if cfg.early_stopping and trainer.best["epoch"] > 0:
        summary["best_epoch"] = trainer.best["epoch"]
        summary["stopped_early"] = trainer.epoch < cfg.epochs
    if trainer.ema is not None and not cfg.ema_eval:
        summary["ema_test_accuracy"] = trainer.evaluate("test", trainer.ema.module)["test_acc"]
    if cfg.snapshots:
        summary["ensemble_test_accuracy"] = _ensemble_accuracy(trainer, run_dir)
    if cfg.target_accuracy is not None:
        summary.update({"target_accuracy": cfg.target_accuracy, "reached": trainer.target["reached"],
                        "seconds_to_target": trainer.target.get("seconds_to_target"),
                        "epochs_to_target": trainer.target.get("epochs_to_target")})
    note = chance_level_note(trainer.history, trainer.model.num_classes)
    if note:
        summary["warning"] = note
        if dist.is_main:
            _note(note)
    summary.update({k: v for k, v in (transfer or {}).items() if v is not None})  # --init / --freeze reports
    if dist.is_main:
        runs.write_weights(run_dir, "final", final.state_dict(), metadata={"model": cfg.model, "data": cfg.data})
        if trainer.ema is not None:
            other = trainer.model if cfg.ema_eval else trainer.ema.module
            runs.write_weights(run_dir, "raw" if cfg.ema_eval else "ema", other.state_dict())
        runs.write_result(run_dir, summary)
    return TrainResult(run_dir, summary["test_accuracy"], trainer.epoch, trainer.train_seconds, params, summary,
                       trainer.history, trainer.model)


def auto_lr(cfg: TrainConfig, model: nn.Module, dataset, augment, mean, std, device) -> float:
    """--lr auto: a 100-step range test from 1e-6 to 10 on this model and data (weights, optimizer and RNG
    restored afterwards), suggestion by the minimum/10 rule (see lr_range). Every rank computes the same value."""
    from ..data import BatchLoader
    from .lr_range import range_test
    from .optim import build_optimizer

    probe_cfg = cfg.replace(lr=1e-6)
    loader = BatchLoader(dataset.train, cfg.batch_size, shuffle=True, seed=cfg.seed, mean=mean, std=std,
                         augment=augment, device=device, channels_last=cfg.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result = range_test(model, build_optimizer(model, probe_cfg), loader, criterion, start_lr=1e-6, end_lr=10.0,
                        steps=100)
    return float(f"{result.suggestion:.3g}")


def chance_level_note(history: list[dict], num_classes: int) -> str:
    """One line when validation accuracy ended at chance level (1/K): either it never rose above it (the net
    did not learn) or it rose and collapsed back; with the likely cause and the fix. Empty otherwise."""
    if num_classes < 2 or not history:
        return ""
    chance = 1.0 / num_classes
    final = history[-1]["val_acc"]
    if final > chance + max(0.05, 0.5 * chance):
        return ""
    best_i = max(range(len(history)), key=lambda i: history[i]["val_acc"])
    best = history[best_i]["val_acc"]
    if best > chance + max(0.1, chance):
        return (f"validation accuracy collapsed to chance level ({final:.3f}, chance {chance:.3f}) after reaching "
                f"{best:.3f} in epoch {best_i + 1}: the learning rate is most likely too high late in the "
                f"schedule; try a lower --lr, --clip-grad 1, or --early-stopping 3 to keep the best epoch")
    return (f"validation accuracy stayed at chance level ({final:.3f}, chance {chance:.3f} for {num_classes} "
            f"classes): the model did not learn. Most likely the learning rate does not suit this model (too high "
            f"for a deep net without batch norm, or far too low): run `cnnlab lr-find` or try --lr 0.01")


@torch.no_grad()
def _ensemble_accuracy(trainer: Trainer, run_dir: Path) -> float:
    """Test accuracy of the snapshot ensemble: softmax probabilities averaged over the saved snapshots."""
    import copy

    from ..runs import weights_path
    from .checkpoint import load_weights
    from .distributed import all_reduce_sum

    distributed.barrier()  # rank 0 wrote the snapshots
    paths = [weights_path(run_dir, f"snapshot:{k}") for k in range(1, trainer.cfg.snapshots + 1)]
    probe = copy.deepcopy(trainer.model).eval()
    loader = trainer.loaders["test"]
    batches = list(loader)
    probs = [torch.zeros(len(y), trainer.model.num_classes, device=trainer.device) for _, y in batches]
    for path in paths:
        probe.load_state_dict(load_weights(path, trainer.device))
        for acc, (x, _) in zip(probs, batches):
            acc += probe(x).float().softmax(1)
    hits = torch.zeros(2, dtype=torch.float64, device=trainer.device)
    for acc, (_, y) in zip(probs, batches):
        hits[0] += (acc.argmax(1) == y).sum()
        hits[1] += len(y)
    all_reduce_sum(hits)
    return float(hits[0] / hits[1].clamp_min(1))
