"""On-device metric sums (no host sync per step) and the per-epoch writers: metrics.jsonl and, when the
tensorboard package is installed, TensorBoard event files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .distributed import all_reduce_sum


class Meter:
    """Sums of loss·n, top-1 hits, top-5 hits and n, kept as one device tensor.

    `update` only launches a few tiny kernels; the host reads the values at sync points (`read`). A non-finite
    loss turns the loss sum non-finite forever, so the divergence guard costs no extra work per step: it checks
    `loss_sum` whenever the host syncs anyway."""

    def __init__(self, device: torch.device, topk: bool = False):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss·n, top1, top5, n
        self.topk = topk

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.sums[0] += loss.detach().double() * n
        self.sums[1] += (logits.argmax(1) == target).sum()
        if self.topk:
            top5 = logits.topk(5, dim=1).indices
            self.sums[2] += (top5 == target.unsqueeze(1)).any(1).sum()
        self.sums[3] += n

    def state(self) -> torch.Tensor:
        return self.sums.detach().cpu().clone()

    def load(self, sums: torch.Tensor) -> None:
        self.sums.copy_(sums.to(self.sums.device))

    def read(self, reduce: bool = False, prefix: str = "") -> dict:
        """Host values {loss, acc[, top5], count} (summed over ranks first when `reduce`)."""
        sums = self.sums.clone()
        if reduce:
            all_reduce_sum(sums)
        loss_sum, top1, top5, n = sums.tolist()
        n_safe = max(n, 1.0)
        out = {f"{prefix}loss": loss_sum / n_safe, f"{prefix}acc": top1 / n_safe}
        if self.topk:
            out[f"{prefix}top5"] = top5 / n_safe
        out[f"{prefix}count"] = int(n)
        return out

    def finite(self) -> bool:
        return math.isfinite(float(self.sums[0]))


class MetricsWriter:
    """Append one JSON object per epoch to metrics.jsonl (flushed + fsync'ed: a kill loses no epoch) and mirror
    the numbers to TensorBoard when `torch.utils.tensorboard` imports."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except Exception:  # ImportError, or tensorboard's own import-time errors
                self.tb = None

    def truncate_after(self, epoch: int) -> None:
        """On resume: drop records of epochs after `epoch` completed ones (written after the checkpoint)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        from ..utils.io import write_text_atomic

        write_text_atomic(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None:
            step = record.get("epoch", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
