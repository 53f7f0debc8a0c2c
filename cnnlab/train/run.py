"""`train(config)`: everything around the loop — device and threads, data, model, the run directory,
resume, the final test score and result files. The CLI's `cnnlab train` is a thin front over this."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..utils.io import save_safetensors_atomic, write_json_atomic, write_text_atomic
from . import distributed
from .config import TrainConfig
from .trainer import Trainer

# What a run directory holds; --overwrite removes exactly these before writing.
RUN_FILES = ("config.json", "config.yaml", "classes.json", "metrics.jsonl", "model.safetensors",
             "model_raw.safetensors", "model_ema.safetensors", "result.json")
RUN_DIRS = ("checkpoints", "snapshots", "tensorboard")


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
    """The dataset --data names, split and resized as the config says (also what `cnnlab data show`'s
    options name); `classes` (a run's saved class list) fixes the labels so a resumed or evaluated run
    reads the data as it was trained."""
    from ..data import load_dataset

    return load_dataset(cfg.data, image_size=cfg.image_size, channels=cfg.channels, seed=cfg.seed,
                        data_dir=cfg.data_dir, offline=cfg.offline, limit_per_class=cfg.limit_per_class,
                        resize=cfg.resize, classes=classes)


def saved_classes(run_dir: Path) -> list[str] | None:
    """The class list a run saved in classes.json (None for a run that has none)."""
    path = Path(run_dir) / "classes.json"
    if not path.is_file():
        return None
    try:
        classes = json.loads(path.read_text())["classes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a cnnlab classes file ({exc!r})") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"{path}: 'classes' must be a list of names")
    return classes


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


def build(cfg: TrainConfig, dataset) -> nn.Module:
    """The model --model names, shaped for the dataset's images and classes."""
    from ..models import build_model

    c, h, w = dataset.image_shape
    return build_model(cfg.model, num_classes=dataset.num_classes, in_channels=c, input_size=(h, w),
                       **model_options(cfg))


def _default_run_dir(cfg: TrainConfig) -> Path:
    data = Path(cfg.data).stem if ("/" in cfg.data or os.sep in cfg.data) else cfg.data
    model = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cfg.model)[:40]
    base = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{model}-{data}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """The run directory, refusing a non-empty one unless --overwrite (which removes old run files)."""
    path = Path(cfg.out) if cfg.out else _default_run_dir(cfg)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not cfg.overwrite:
            raise ConfigError(f"--out {path}: directory exists and is not empty (use --overwrite, or --resume "
                              f"{path} to continue it)")
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(path / name, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _describe(cfg: TrainConfig, dataset, model: nn.Module, mean, std) -> dict:
    """config.json: the TrainConfig plus what analysis needs to rebuild the model."""
    c, h, w = dataset.image_shape
    return {**cfg.to_dict(), "num_classes": dataset.num_classes, "in_channels": c, "image_size": [h, w],
            "model_options": model_options(cfg), "classes": list(dataset.classes),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "params": sum(p.numel() for p in model.parameters()), "split_sizes":
                {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)}}


def config_from_run(run_dir: Path) -> TrainConfig:
    """The run's own TrainConfig (config.yaml: exactly the fields, loadable with --config too)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: not a run directory (no config.yaml / config.json)")
    return TrainConfig.load(path)


def train(config: TrainConfig | dict | None = None, *, resume: str | Path | None = None,
          hooks: dict[str, list[Callable]] | None = None, **overrides) -> TrainResult:
    """Train a model as `config` says (TrainConfig, a dict of its fields, or keyword overrides) and return
    the result; `resume=RUN_DIR` continues an interrupted run from its last checkpoint instead."""
    wall = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        cfg = config_from_run(run_dir)
    else:
        cfg = TrainConfig.resolve(config, overrides, "train()")
    dist = distributed.env_info()
    device = resolve_device(cfg.device, dist)
    dist = distributed.setup(device.type)
    try:
        result = _train(cfg, dist, device, run_dir if resume is not None else None, hooks, wall)
    except BaseException:
        distributed.teardown(finished=False)
        raise
    distributed.teardown()
    return result


def _train(cfg: TrainConfig, dist, device, resume_dir: Path | None, hooks, wall: float) -> TrainResult:
    from ..data import BatchLoader

    set_threads(cfg, dist)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    dataset = load_data(cfg, saved_classes(resume_dir) if resume_dir is not None else None)
    model = build(cfg, dataset).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = build_augment(cfg, dataset)
    mean, std = dataset.channel_stats()
    common = dict(seed=cfg.seed, mean=mean, std=std, device=device, channels_last=cfg.channels_last,
                  rank=dist.rank, world_size=dist.world_size)
    loaders = {"train": BatchLoader(dataset.train, cfg.batch_size, shuffle=True, augment=augment, **common),
               "val": BatchLoader(dataset.val, cfg.eval_batch_size, **common),
               "test": BatchLoader(dataset.test, cfg.eval_batch_size, **common)}

    # Everything user-checkable has been checked: only now create/claim the run directory.
    if resume_dir is not None:
        run_dir = resume_dir
    else:
        chosen: str | Exception = ""
        if dist.is_main:
            try:
                chosen = str(prepare_run_dir(cfg))
            except ConfigError as exc:
                chosen = exc
        chosen = distributed.broadcast_object(chosen)
        if isinstance(chosen, Exception):
            raise ConfigError(str(chosen))
        run_dir = Path(chosen)
        if dist.is_main:
            import yaml

            write_json_atomic(run_dir / "config.json", _describe(cfg, dataset, model, mean, std))
            write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_json_atomic(run_dir / "classes.json", {"classes": list(dataset.classes), "class_to_idx":
                                                         {c: i for i, c in enumerate(dataset.classes)}})
    trainer = Trainer(cfg, model, loaders, device=device, dist=dist, run_dir=run_dir, hooks=hooks)
    if resume_dir is not None:
        trainer.load_checkpoint(resume_dir)
    trainer.fit()
    return _finish(cfg, trainer, dataset, run_dir, dist, wall)


def _finish(cfg: TrainConfig, trainer: Trainer, dataset, run_dir: Path, dist, wall: float) -> TrainResult:
    """Score the kept weights on the test split, write model.safetensors and result.json, print a summary."""
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
    if trainer.ema is not None and not cfg.ema_eval:
        summary["ema_test_accuracy"] = trainer.evaluate("test", trainer.ema.module)["test_acc"]
    if cfg.snapshots:
        summary["ensemble_test_accuracy"] = _ensemble_accuracy(trainer, run_dir)
    if dist.is_main:
        save_safetensors_atomic(final.state_dict(), run_dir / "model.safetensors",
                                metadata={"model": cfg.model, "data": cfg.data})
        if trainer.ema is not None:
            other = trainer.model if cfg.ema_eval else trainer.ema.module
            name = "model_raw.safetensors" if cfg.ema_eval else "model_ema.safetensors"
            save_safetensors_atomic(other.state_dict(), run_dir / name)
        write_json_atomic(run_dir / "result.json", summary)
        correct = round(summary["test_accuracy"] * test["test_count"])
        print(f"test accuracy {summary['test_accuracy']:.4f} ({correct}/{test['test_count']}) after "
              f"{trainer.epoch} epochs, {summary['seconds']:.1f} s of training; run written to {run_dir}", flush=True)
    return TrainResult(run_dir, summary["test_accuracy"], trainer.epoch, trainer.train_seconds, params, summary,
                       trainer.history, trainer.model)


@torch.no_grad()
def _ensemble_accuracy(trainer: Trainer, run_dir: Path) -> float:
    """Test accuracy of the snapshot ensemble: softmax probabilities averaged over the saved snapshots."""
    import copy

    from .checkpoint import load_weights
    from .distributed import all_reduce_sum

    distributed.barrier()  # rank 0 wrote the snapshots
    paths = sorted((run_dir / "snapshots").glob("snapshot-*.safetensors"))
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
