"""Ensembles: the class probabilities of several models averaged — independently trained runs
(`--ensemble RUN ...`) or the snapshots of one snapshot-ensembled run (`weights="snapshots"`), as the
lectures' "~2% improved performance in practice" recipe. Each member normalises the images with its own
run's statistics; members must share the class list (probabilities are averaged class by class) and the
input geometry (one set of decoded images feeds them all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..runs import Run

if TYPE_CHECKING:
    import torch
    from torch import nn

SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class MemberSpec:
    """Which weights of which run an ensemble member is (checked, not yet loaded)."""

    name: str
    run: Run
    weights: str


@dataclass
class Member:
    """A loaded member: its model (eval mode) and its run's normalisation."""

    name: str
    model: "nn.Module"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: tuple[str, ...] = ()  # what loading did to the model, e.g. the BNs left unfolded by fuse_bn


def open_run(run: Run | str | Path) -> Run:
    """A Run from a Run or a path."""
    return run if isinstance(run, Run) else Run.open(run)


def _short(names: list[str]) -> str:
    return "[" + ", ".join(names[:6]) + (f", … {len(names)} in all]" if len(names) > 6 else "]")


def member_specs(run: Run, weights: str = "final", ensemble: list | None = None) -> list[MemberSpec]:
    """The members `run` with `weights` (plus the runs of `ensemble`, with the same kind of weights) make,
    every weights file and class list checked before anything is loaded. `weights="snapshots"` takes
    every snapshot a snapshot-ensembled run kept."""
    runs = [run] + [open_run(r) for r in (ensemble or [])]
    for other in runs[1:]:
        if other.classes != run.classes:
            raise ConfigError(f"--ensemble {other.path}: its classes {_short(other.classes)} differ from "
                              f"{run.path}'s {_short(run.classes)}; ensemble members average probabilities "
                              f"class by class, so they must share one class list")
        a, b = other.preprocess, run.preprocess
        if (a.image_size, a.channels, a.pad, a.resize) != (b.image_size, b.channels, b.pad, b.resize):
            raise ConfigError(f"--ensemble {other.path}: trained on {a.channels}x{a.image_size[0]}x"
                              f"{a.image_size[1]} inputs (pad {a.pad}, {a.resize}), {run.path} on "
                              f"{b.channels}x{b.image_size[0]}x{b.image_size[1]} (pad {b.pad}, {b.resize}); "
                              f"members must take the same images")
    specs = []
    for r in runs:
        label = r.path.name
        if weights == SNAPSHOTS:
            kinds = [k for k in r.weight_kinds() if k.startswith("snapshot:")]
            if not kinds:
                raise ConfigError(f"{r.path}: --weights snapshots: the run kept no snapshots "
                                  f"(train with --snapshots M)")
            specs += [MemberSpec(f"{label}/{k}", r, k) for k in kinds]
        else:
            r.resolve_weights(weights)  # one-line error now if the file is missing
            specs.append(MemberSpec(label if weights == "final" else f"{label}/{weights}", r, weights))
    return specs


def load_members(specs: list[MemberSpec], device: str = "cpu", fuse_bn: bool = False) -> list[Member]:
    """Build each member's model with its weights, in eval mode; with `fuse_bn`, every BatchNorm that
    follows a conv or linear layer folded into it (the same function at test time, fewer layers to run)."""
    from .fuse import fold_batchnorm

    members = []
    for spec in specs:
        pre = spec.run.preprocess
        model, notes = spec.run.model(spec.weights, device=device), ()
        if fuse_bn:
            folded = fold_batchnorm(model, inplace=True)
            model = folded.model
            notes = (f"{spec.name}: --fuse-bn folded {len(folded.folded)} BatchNorm layer(s) into the conv/linear "
                     f"layer before each", *(f"{spec.name}: {n}" for n in folded.notes))
        members.append(Member(spec.name, model, pre.mean, pre.std, notes))
    return members


def predict_split(members: list[Member], split, *, tta: str | None = None, batch_size: int = 512,
                  device: str = "cpu") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(log of the ensemble's averaged probabilities (N, K), each member's predicted class (M, N)) over a
    uint8 Split. Every member sees the images normalised by its own run's mean/std through the same
    BatchLoader training scores with; with one member and no TTA the log-probabilities are exactly
    log_softmax of its logits."""
    import torch

    from ..data import BatchLoader
    from .tta import num_views, tta_log_proba

    per_batch = max(1, batch_size // num_views(tta))  # images per batch so views x images <= batch_size
    loaders = [BatchLoader(split, per_batch, mean=torch.tensor(m.mean), std=torch.tensor(m.std), device=device)
               for m in members]
    log_probs, preds = [], [[] for _ in members]
    with torch.no_grad():
        for batches in zip(*loaders):
            member_logp = []
            for i, (member, (x, _)) in enumerate(zip(members, batches)):
                logp = tta_log_proba(member.model, x, tta, max_batch=batch_size)
                preds[i].append(logp.argmax(1))
                member_logp.append(logp)
            stacked = torch.stack(member_logp)
            log_probs.append(torch.logsumexp(stacked, 0) - torch.log(torch.tensor(float(len(members)))))
    k = members[0].model.num_classes if hasattr(members[0].model, "num_classes") else None
    if not log_probs:
        return torch.empty(0, k or 0), torch.empty(len(members), 0, dtype=torch.long)
    return torch.cat(log_probs).cpu(), torch.stack([torch.cat(p) for p in preds]).cpu()
