"""Freezing by stage, the BN policy of frozen stages, per-stage learning rates and gradual unfreezing.

Stage names are the ones every cnnlab family shares (`stem`, `stage1` … `stageN`, `head`; see
ConvNet.stages). Specs:
  --freeze all-but-head | up-to:stageK | stem,stage1,...
  --lr-mult head=1,stage4=0.1,*=0.01         (the lectures' tip: ~1/10 on the top layers, ~1/100 below)
  --bn freeze | affine | train               what BatchNorm does inside frozen stages
  --unfreeze-every K                         release one frozen stage every K epochs, top stage first

A frozen stage's parameters get requires_grad=False (no gradient, so the optimizer leaves them alone —
weight decay and momentum included). BN policy inside frozen stages:
  freeze  eval mode (running statistics fixed) and γ/β frozen — the default;
  affine  eval mode, but γ/β trained (a cheap adaptation: only the BN affine parameters move);
  train   the running statistics keep adapting to the new data (train mode), γ/β frozen.
A BN held in eval mode stays there when anyone calls model.train() (as the trainer does every epoch).

Imported by cnnlab.train (and its spec parsers by TrainConfig.validate): imports nothing above train, and
torch only inside functions.
"""

from __future__ import annotations

import re
import types
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

BN_POLICIES = ("freeze", "affine", "train")
_STAGE = re.compile(r"stem|head|stage[1-9]\d*")


# --- specs (parse time: no model, no torch) ----------------------------------------------------------------

def parse_freeze(spec: str | None) -> tuple[str, tuple[str, ...]]:
    """("", ()) for none; ("all-but-head", ()); ("up-to", (stage,)); ("list", (stages…))."""
    if spec is None or not str(spec).strip():
        return "", ()
    text = str(spec).strip()
    if text == "all-but-head":
        return "all-but-head", ()
    if text.startswith("up-to:"):
        name = text[len("up-to:"):].strip()
        if not _STAGE.fullmatch(name) or name == "head":
            raise ConfigError(f"--freeze {text}: expected up-to:stem or up-to:stageK")
        return "up-to", (name,)
    names = tuple(n.strip() for n in text.split(","))
    bad = [n for n in names if not _STAGE.fullmatch(n)]
    if bad:
        raise ConfigError(f"--freeze {text}: {bad[0]!r} is not a stage name; expected all-but-head, up-to:stageK "
                          f"or a list of stem, stage1, …, head")
    return "list", names


def parse_lr_mult(spec: str | None) -> dict[str, float]:
    """'head=1,stage4=0.1,*=0.01' → {'head': 1.0, 'stage4': 0.1, '*': 0.01}."""
    if spec is None or not str(spec).strip():
        return {}
    out: dict[str, float] = {}
    for item in str(spec).split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not (name == "*" or _STAGE.fullmatch(name)):
            raise ConfigError(f"--lr-mult {spec}: expected STAGE=FACTOR items (stem, stageK, head or *), "
                              f"got {item.strip()!r}")
        try:
            factor = float(value)
        except ValueError:
            raise ConfigError(f"--lr-mult {spec}: {value.strip()!r} is not a number") from None
        if not factor >= 0 or factor == float("inf"):
            raise ConfigError(f"--lr-mult {spec}: factors must be finite and >= 0, got {value.strip()}")
        if name in out:
            raise ConfigError(f"--lr-mult {spec}: {name} is given twice")
        out[name] = factor
    return out


def check_options(freeze: str | None, lr_mult: str | None, bn: str, unfreeze_every: int) -> None:
    """Parse-time checks of the transfer options (TrainConfig.validate calls this)."""
    parse_freeze(freeze)
    parse_lr_mult(lr_mult)
    if bn not in BN_POLICIES:
        raise ConfigError(f"unknown bn {bn!r}; known: {', '.join(BN_POLICIES)}")
    if not isinstance(unfreeze_every, int) or isinstance(unfreeze_every, bool) or unfreeze_every < 0:
        raise ConfigError(f"unfreeze-every must be an integer >= 0, got {unfreeze_every!r}")
    if unfreeze_every and not parse_freeze(freeze)[0]:
        raise ConfigError("--unfreeze-every releases frozen stages: give --freeze too (e.g. --freeze all-but-head)")


# --- against a model --------------------------------------------------------------------------------------

def resolve_freeze(spec: str | None, stage_names: tuple[str, ...], model_name: str = "the model") -> list[str]:
    """The stages --freeze names, in the model's order; ConfigError when a name is not one of the model's
    stages or the spec matches nothing."""
    kind, names = parse_freeze(spec)
    if not kind:
        return []
    known = ", ".join(stage_names)
    for n in names:
        if n not in stage_names:
            raise ConfigError(f"--freeze {spec}: {model_name} has no stage {n!r}; its stages: {known}")
    if kind == "all-but-head":
        chosen = [s for s in stage_names if s != "head"]
    elif kind == "up-to":
        chosen = list(stage_names[:stage_names.index(names[0]) + 1])
    else:
        chosen = [s for s in stage_names if s in names]
    if not chosen:
        raise ConfigError(f"--freeze {spec}: matches no stage of {model_name} (its stages: {known})")
    return chosen


def resolve_lr_mult(spec: str | None, stage_names: tuple[str, ...], model_name: str = "the model") -> dict:
    """--lr-mult checked against the model's stages (an unknown stage is an error, not silently ignored)."""
    mult = parse_lr_mult(spec)
    for name in mult:
        if name != "*" and name not in stage_names:
            raise ConfigError(f"--lr-mult {spec}: {model_name} has no stage {name!r}; its stages: "
                              f"{', '.join(stage_names)}")
    return mult


def _eval_only_train(self, mode: bool = True):
    """train() of a BN held in eval mode: stays in eval whatever `mode` says."""
    from torch import nn

    return nn.Module.train(self, False)


def _is_bn(m) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return isinstance(m, _BatchNorm)


class StageFreezer:
    """Applies --freeze / --bn / --unfreeze-every to a ConvNet. `set_epoch(e)` is a pure function of the
    epoch (which stages are frozen at epoch e), so a resumed run reaches the same state."""

    def __init__(self, model: "nn.Module", freeze: str | None, bn: str = "freeze", unfreeze_every: int = 0,
                 model_name: str = "the model"):
        if not hasattr(model, "stages"):
            raise ConfigError(f"--freeze: {model_name} has no named stages")
        self.model, self.bn, self.unfreeze_every = model, bn, unfreeze_every
        self.stage_names = tuple(model.stage_names)
        self.initial = resolve_freeze(freeze, self.stage_names, model_name)
        self.stages = dict(model.stages())
        self.frozen: list[str] = []

    def frozen_at(self, epoch: int) -> list[str]:
        """Frozen stages during (0-based) `epoch`: the initial set less its top epoch // K stages."""
        if not self.unfreeze_every:
            return list(self.initial)
        released = min(len(self.initial), epoch // self.unfreeze_every)
        return list(self.initial[:len(self.initial) - released])

    def set_epoch(self, epoch: int) -> list[str]:
        """Freeze/release stages for `epoch`; returns the frozen stage names."""
        self.apply(self.frozen_at(epoch))
        return self.frozen

    def apply(self, frozen: list[str]) -> None:
        """requires_grad and BN mode for every stage: those in `frozen` frozen (with the BN policy), the
        others trainable with BN behaving normally."""
        for name, stage in self.stages.items():
            is_frozen = name in frozen
            for p in stage.parameters():
                p.requires_grad_(not is_frozen)
            for m in stage.modules():
                if not _is_bn(m):
                    continue
                if is_frozen and self.bn == "affine":
                    for p in m.parameters(recurse=False):
                        p.requires_grad_(True)
                if is_frozen and self.bn in ("freeze", "affine"):
                    hold_eval(m)
                elif is_held_eval(m):  # released: back to the mode the rest of the model is in
                    release_eval(m)
                    m.train(self.model.training)
        self.frozen = list(frozen)

    def counts(self) -> tuple[int, int]:
        """(trainable, frozen) parameter counts now."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
        return trainable, frozen

    def describe(self, spec: str) -> str:
        """The note the CLI prints: what is frozen, parameter counts, the BN policy, the unfreezing plan."""
        trainable, frozen = self.counts()
        training = [s for s in self.stage_names if s not in self.frozen]
        text = (f"--freeze {spec}: frozen {', '.join(self.frozen)} ({frozen:,} parameters); trainable "
                f"{', '.join(training) or 'none'} ({trainable:,} parameters); BN in frozen stages: {self.bn}")
        if self.unfreeze_every:
            order = list(reversed(self.initial))
            text += f"; one stage released every {self.unfreeze_every} epoch(s): {' → '.join(order)}"
        return text


def hold_eval(bn: "nn.Module") -> None:
    """Put a BN layer in eval mode and keep it there through later train() calls (an instance-level train()
    that ignores its argument; removed again by release_eval)."""
    bn.__dict__["train"] = types.MethodType(_eval_only_train, bn)
    bn.training = False


def release_eval(bn: "nn.Module") -> None:
    """Undo hold_eval: the BN follows train()/eval() again (it takes the mode of its next train() call)."""
    bn.__dict__.pop("train", None)


def is_held_eval(bn: "nn.Module") -> bool:
    return "train" in bn.__dict__
