"""The training loop, written out plainly: `train_one_epoch`, `evaluate`, `fit`, with a few named hooks.

Hooks are plain callables in `Trainer.hooks[name]`, called with the trainer (and the epoch record for
"epoch_end"): "epoch_start", "step_end", "epoch_end", "checkpoint". Subclasses may override the `on_*`
methods instead. There is no event framework beyond that.

Host syncs: the loss, hit counts and the non-finite flag live on the device (see metrics.Meter); the host
reads them every `nan_check_every` steps, before each checkpoint and at epoch end — never per step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CnnlabError, CnnlabWarning
from ..runs import MetricsWriter
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo
from .ema import ModelEma
from .finetune import make_freezer
from .scoring import evaluate
from .metrics import Meter
from .optim import LRSchedule, build_optimizer, l1_weights
from .progress import EpochProgress

HOOK_NAMES = ("epoch_start", "step_end", "epoch_end", "checkpoint")


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after it checkpointed the exact position: `run_dir`, `epoch` (1-based, the one
    in progress) and `step` say where; `cnnlab train --resume RUN_DIR` continues it."""

    def __init__(self, run_dir: Path | None, epoch: int, step: int):
        super().__init__(f"interrupted in epoch {epoch} at step {step}")
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


def training_loss(output, target: torch.Tensor, criterion: nn.Module, aux_weight: float = 0.3):
    """(loss, logits) for what a model's training forward returned: plain logits, or a tuple (logits,
    *auxiliary logits) as GoogLeNet returns with aux_logits, whose losses are added with `aux_weight`
    (0.3 in Szegedy et al. 2014; the auxiliary heads are ignored at inference)."""
    if isinstance(output, (tuple, list)):
        logits, *aux = output
        loss = criterion(logits.float(), target)
        for extra in aux:
            if extra is not None:
                loss = loss + aux_weight * criterion(extra.float(), target)
        return loss, logits
    return criterion(output.float(), target), output


class Trainer:
    """Owns the model, optimizer, schedule, EMA and loaders of one run and the position within it
    (`epoch`, `step` within the epoch, `global_step`)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, loaders: dict, *, device: torch.device,
                 dist: DistInfo, run_dir: Path | None, hooks: dict[str, list[Callable]] | None = None):
        self.cfg, self.model, self.loaders, self.device, self.dist = cfg, model, loaders, device, dist
        self.run_dir = run_dir
        self.hooks = {name: list((hooks or {}).get(name, [])) for name in HOOK_NAMES}
        unknown = set(hooks or {}) - set(HOOK_NAMES)
        if unknown:
            raise ValueError(f"unknown hook(s) {sorted(unknown)}; known: {HOOK_NAMES}")
        self.train_model: nn.Module = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(model, cfg)  # with --lr-mult's groups; --freeze's frozen params included
        self.freezer = make_freezer(model, cfg)  # --freeze / --bn / --unfreeze-every, applied at each epoch start
        # Every rank must take the same number of steps (DDP all-reduces each one): use the smallest shard.
        n_local = len(loaders["train"].split) // dist.world_size
        self.steps_per_epoch = max(1, math.ceil(n_local / cfg.batch_size))
        self.schedule = LRSchedule(cfg, self.steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.l1_params = l1_weights(model) if cfg.l1 > 0 else []
        self.ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
        self.autocast, self.scaler, amp_note = _amp(cfg.amp, device)
        if amp_note and dist.is_main:
            warnings.warn(amp_note, CnnlabWarning, stacklevel=2)
        self.aux_weight = float(getattr(model, "aux_loss_weight", 0.3))
        self.meter = Meter(device)
        self.epoch = self.step = self.global_step = 0
        self.lr = cfg.lr
        self.best = {"value": float("nan"), "epoch": -1, "bad_epochs": 0}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stop_requested = False
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.fit_seconds = 0.0  # wall time inside fit (training, evaluation, checkpoints), across resumes
        self._clock: float | None = None
        self.target: dict = {"reached": False}
        self.progress = EpochProgress(enabled=not cfg.quiet and dist.is_main, epochs=cfg.epochs)
        self.writer = MetricsWriter(run_dir, enabled=dist.is_main) if run_dir is not None else None

    # --- hooks -------------------------------------------------------------------------------------------
    def on_epoch_start(self) -> None:
        for fn in self.hooks["epoch_start"]:
            fn(self)

    def on_step_end(self) -> None:
        for fn in self.hooks["step_end"]:
            fn(self)

    def on_epoch_end(self, record: dict) -> None:
        for fn in self.hooks["epoch_end"]:
            fn(self, record)

    def on_checkpoint(self) -> None:
        for fn in self.hooks["checkpoint"]:
            fn(self)

    # --- the loop ----------------------------------------------------------------------------------------
    def eval_module(self) -> nn.Module:
        """The weights that are scored and kept: the EMA copy with --ema-eval, else the model."""
        return self.ema.module if (self.ema is not None and self.cfg.ema_eval) else self.model

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.lr = self.schedule.apply(self.optimizer, self.global_step)
        with self.autocast():
            loss, logits = training_loss(self.train_model(x), y, self.criterion, self.aux_weight)
        objective = loss
        if self.l1_params:
            objective = loss + self.cfg.l1 * torch.stack(torch._foreach_norm(self.l1_params, 1)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            if self.cfg.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            objective.backward()
            if self.cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.meter.update(loss, logits, y)

    def train_one_epoch(self) -> dict:
        """Train from the current position to the end of epoch `self.epoch`; return its train metrics."""
        cfg, loader = self.cfg, self.loaders["train"]
        self.train_model.train()
        frozen = self._apply_freeze()
        loader.set_epoch(self.epoch, self.step)
        self.on_epoch_start()
        self.progress.start_epoch(self.epoch, self.steps_per_epoch, self.step)
        start = time.perf_counter()
        done_before = self.meter.read(reduce=True)["count"]  # > 0 when resuming mid-epoch
        for x, y in loader:
            if self.step >= self.steps_per_epoch:
                break
            self.train_step(x, y)
            self.step += 1
            self.global_step += 1
            self.progress.advance()
            self.on_step_end()
            if self.step % cfg.nan_check_every == 0:
                self.check_finite()
                if self.progress.enabled:
                    m = self.meter.read()
                    self.progress.show(loss=m["loss"], acc=m["acc"])
            mid_epoch = self.step < self.steps_per_epoch
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 and mid_epoch:
                self.save_checkpoint()
            if self.stop_requested:
                self.save_checkpoint()
                raise TrainingInterrupted(self.run_dir, self.epoch + 1, self.step)
            if cfg.eval_every and cfg.target_accuracy and mid_epoch and self.global_step % cfg.eval_every == 0:
                if self.check_target(self.evaluate("val")["val_acc"]):
                    break  # the target is reached: the epoch ends here
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        metrics = self.meter.read(reduce=True, prefix="train_")
        if not math.isfinite(metrics["train_loss"]):
            self._diverged()
        images = metrics["train_count"] - done_before  # this session's images, all ranks
        metrics.update(lr=self.lr, images_per_s=images / max(seconds, 1e-9), seconds=seconds)
        if frozen is not None:
            metrics.update(trainable_params=self.freezer.counts()[0], frozen_stages=len(frozen))
        del metrics["train_count"]
        return metrics

    def _apply_freeze(self) -> list[str] | None:
        """--freeze for this epoch (gradual unfreezing releases the top frozen stage every K epochs; frozen BN
        stays in eval mode through the train() call above). Returns the frozen stages (None without --freeze)."""
        if self.freezer is None:
            return None
        before = list(self.freezer.frozen)
        frozen = self.freezer.set_epoch(self.epoch)
        if frozen != before and self.cfg.l1 > 0:
            self.l1_params = l1_weights(self.model)  # the L1 penalty follows the trainable weights
        return frozen

    def evaluate(self, split: str, module: nn.Module | None = None, prefix: str | None = None) -> dict:
        """`evaluate` on one of the run's splits as {prefix}loss/acc/top5/count (prefix "<split>_")."""
        scores = evaluate(self.model if module is None else module, self.loaders[split], autocast=self.autocast)
        prefix = f"{split}_" if prefix is None else prefix
        out = {f"{prefix}loss": scores["loss"], f"{prefix}acc": scores["top1"]}
        if scores["top5"] is not None:
            out[f"{prefix}top5"] = scores["top5"]
        out[f"{prefix}count"] = scores["count"]
        return out

    def elapsed(self) -> float:
        """Wall seconds spent in fit so far (this session plus the sessions before a resume)."""
        return self.fit_seconds + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    def check_target(self, val_acc: float) -> bool:
        """Record the moment validation top-1 first reaches --target-accuracy; True once it has."""
        target = self.cfg.target_accuracy
        if target is None or self.target["reached"]:
            return self.target["reached"]
        if val_acc >= target:
            self.target = {"reached": True, "seconds_to_target": round(self.elapsed(), 3),
                           "epochs_to_target": round(self.global_step / self.steps_per_epoch, 3),
                           "val_accuracy_at_target": val_acc}
            self.progress.log(f"target val accuracy {target:g} reached ({val_acc:.4f}) after "
                              f"{self.target['seconds_to_target']:.1f} s, {self.target['epochs_to_target']:g} epochs")
        return self.target["reached"]

    def fit(self) -> list[dict]:
        """Epochs from the current position to cfg.epochs (or an early stop, or the target accuracy); returns
        the epoch records."""
        cfg = self.cfg
        self._clock = time.perf_counter()
        with self.progress, _stop_on_sigint(self):
            while self.epoch < cfg.epochs and not self._patience_exhausted() and not self.target["reached"]:
                record = {"epoch": self.epoch + 1, **self.train_one_epoch()}
                record.update(self.evaluate("val"))
                if self.ema is not None:
                    record.update(self.evaluate("val", self.ema.module, prefix="ema_val_"))
                self.progress.show(loss=record["train_loss"], acc=record["train_acc"], val_acc=record["val_acc"])
                monitored = record[("ema_" if cfg.ema_eval else "") + cfg.monitor]
                self.schedule.epoch_end(monitored, higher_is_better=cfg.monitor == "val_acc")
                stop = self._early_stopping(monitored)
                reached = self.check_target(record["val_acc"])
                self._snapshot()
                self.epoch, self.step = self.epoch + 1, 0
                self.meter = Meter(self.device)
                self.history.append(record)
                if self.writer is not None:
                    self.writer.write(record)
                self.on_epoch_end(record)
                self.save_checkpoint()
                if self.stop_requested:
                    raise TrainingInterrupted(self.run_dir, self.epoch + 1, 0)
                if stop:
                    self.progress.log(f"early stopping after epoch {self.epoch}: best {cfg.monitor} "
                                      f"{self.best['value']:.4f} at epoch {self.best['epoch']}")
                    break
                if reached:
                    break
        self.fit_seconds, self._clock = self.elapsed(), None
        if self.best_weights is not None:
            self.eval_module().load_state_dict(self.best_weights)  # early stopping: back to the best epoch
        if self.writer is not None:
            self.writer.close()
        return self.history

    # --- regularisers that act between epochs ------------------------------------------------------------
    def _patience_exhausted(self) -> bool:
        """Early stopping already decided to stop (true when resuming a run killed after that decision)."""
        return bool(self.cfg.early_stopping) and self.best["bad_epochs"] >= self.cfg.early_stopping

    def _early_stopping(self, value: float) -> bool:
        """Track the best monitored value (keeping its weights); True once `early_stopping` epochs passed
        without improvement."""
        if not self.cfg.early_stopping:
            return False
        higher = self.cfg.monitor == "val_acc"
        best = self.best["value"]
        if math.isnan(best) or (value > best if higher else value < best):
            self.best.update(value=value, epoch=self.epoch + 1, bad_epochs=0)
            self.best_weights = {k: v.detach().clone() for k, v in self.eval_module().state_dict().items()}
            return False
        self.best["bad_epochs"] += 1
        return self.best["bad_epochs"] >= self.cfg.early_stopping

    def _snapshot(self) -> None:
        """Snapshot ensembling: at the end of each cosine cycle save the weights as snapshots/snapshot-K."""
        m = self.cfg.snapshots
        if not m or (self.epoch + 1) % (self.cfg.epochs // m) or self.run_dir is None or not self.dist.is_main:
            return
        from ..utils.io import save_safetensors_atomic

        k = (self.epoch + 1) // (self.cfg.epochs // m)
        path = self.run_dir / "snapshots" / f"snapshot-{k}.safetensors"
        save_safetensors_atomic(self.eval_module().state_dict(), path)

    # --- guards and checkpoints --------------------------------------------------------------------------
    def check_finite(self, weights_too: bool = False) -> None:
        """Stop with TrainingDiverged if the loss sum (and, when asked, any weight) is NaN/inf. One host sync."""
        if not self.meter.finite():
            self._diverged()
        if weights_too:  # a finite loss can still come with inf gradients that poisoned the weights
            params = [p.detach() for p in self.model.parameters()]
            if params and not bool(torch.stack(torch._foreach_norm(params)).isfinite().all()):
                self._diverged()

    def _diverged(self) -> None:
        last = ckpt.latest_info(self.run_dir) if self.run_dir is not None else None
        kept = (f"; last good checkpoint: epoch {last['epoch'] + 1} step {last['step']}" if last
                else "; no checkpoint was written")
        raise TrainingDiverged(f"loss became NaN/inf in epoch {self.epoch + 1} by step {self.step} "
                               f"(checked every {self.cfg.nan_check_every} steps){kept}; try a lower --lr "
                               f"or --clip-grad")

    def save_checkpoint(self) -> None:
        """Checkpoint the exact position (rank 0 writes; refuses to save a diverged state)."""
        self.check_finite(weights_too=True)
        if self.run_dir is None or not self.dist.is_main:
            return
        weights = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            weights.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        if self.best_weights is not None:
            weights.update({f"best.{k}": v for k, v in self.best_weights.items()})
        state = {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                 "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                 "ema_updates": self.ema.updates if self.ema is not None else 0,
                 "rng": ckpt.rng_state(), "meter": self.meter.state(), "best": dict(self.best),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                 "train_seconds": self.train_seconds, "threads": torch.get_num_threads(),
                 "fit_seconds": self.elapsed(), "target": dict(self.target)}
        ckpt.save_checkpoint(self.run_dir, weights, state, self.global_step)
        self.on_checkpoint()

    def load_checkpoint(self, run_dir: Path) -> None:
        """Continue from the run's last good checkpoint; every file and value is checked first (one line
        naming the file when it does not belong to this run's model and optimizer)."""
        weights, state = ckpt.load_checkpoint(run_dir, self.device)
        info = ckpt.latest_info(run_dir)
        where = Path(run_dir) / ckpt.CKPT_DIR / info["weights"]
        ckpt.load_into(self.model, ckpt.split_prefixed(weights, "model."), where)
        if self.ema is not None:
            ckpt.load_into(self.ema.module, ckpt.split_prefixed(weights, "ema."), where)
        best = ckpt.split_prefixed(weights, "best.")
        if best:
            ckpt.check_fits(self.eval_module(), best, where)
        try:
            self._restore(state, best)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            why = (str(exc).strip().splitlines() or [""])[0][:100]
            raise ckpt.ConfigError(f"{Path(run_dir) / ckpt.CKPT_DIR / info['state']}: not the training state of "
                                   f"this run's model and optimizer ({type(exc).__name__}: {why})") from None

    def _restore(self, state: dict, best: dict) -> None:
        """Position, optimizer, schedule, counters and RNG states from a loaded checkpoint's state."""
        if self.ema is not None:
            self.ema.updates = int(state["ema_updates"])
        self.best_weights = best or None
        self.best = dict(state["best"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.global_step = int(state["epoch"]), int(state["step"]), int(state["global_step"])
        # Partial-epoch sums: rank 0's (the only ones saved) on rank 0, zero elsewhere, so that the all-reduced
        # epoch metrics count no sample twice.
        self.meter.load(state["meter"] if self.dist.is_main else torch.zeros_like(state["meter"]))
        self.train_seconds = float(state["train_seconds"])
        self.fit_seconds = float(state.get("fit_seconds", self.train_seconds))
        self.target = dict(state.get("target", {"reached": False}))
        if not self.cfg.threads and "threads" in state:
            # Bitwise resume needs the same reductions, so the same thread count as the interrupted run.
            torch.set_num_threads(int(state["threads"]))
        ckpt.set_rng_state(state["rng"])
        if self.writer is not None:
            self.writer.truncate_after(self.epoch)


def _amp(mode: str, device: torch.device):
    """(autocast context factory, GradScaler or None, note or ""): bf16/fp16 autocast on CUDA (fp16 with a
    GradScaler against underflowing gradients); bf16 on CPU when asked; fp32 otherwise. The note says when
    the mode asked for is not what runs."""
    if mode == "none":
        return contextlib.nullcontext, None, ""
    if device.type == "cuda":
        note = ""
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            mode, note = "fp16", "--amp bf16: this GPU has no bf16; using fp16 with a gradient scaler"
        dtype = torch.float16 if mode == "fp16" else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast("cuda", dtype=dtype)), scaler, note
    if device.type == "cpu" and mode == "bf16":
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None, ""
    return (contextlib.nullcontext, None,
            f"--amp {mode}: no {mode} autocast on {device.type}; training in fp32 (on CPU use --amp bf16)")


@contextlib.contextmanager
def _stop_on_sigint(trainer: Trainer):
    """First Ctrl-C: finish the current step, checkpoint, stop (KeyboardInterrupt). Second: immediate."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
