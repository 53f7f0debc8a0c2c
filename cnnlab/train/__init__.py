"""Training engine: `cnnlab.train.train(config)` (also `cnnlab.train_model`) runs the loop of the lectures
(PyTorch's zero_grad → forward → loss → backward → step) with checkpoints, resume, EMA, schedules, early
stopping, snapshot ensembles and torchrun data parallelism; `evaluate(model, loader)` is the one scoring
function. No function here shares its name with a submodule (importing the submodule would overwrite the
attribute), so `lr_find` lives in `lr_range.py`. Heavy modules (trainer, torch) load on first call only.
"""

from __future__ import annotations

from .config import TrainConfig

__all__ = ["TrainConfig", "train", "lr_find", "evaluate"]


def train(config=None, *, resume=None, hooks=None, **overrides):
    """Train as `config` (a TrainConfig or a dict of its fields, plus keyword overrides) says; returns a
    TrainResult. `resume=RUN_DIR` continues an interrupted run exactly. See cnnlab.train.run.train."""
    from .run import train as _train

    return _train(config, resume=resume, hooks=hooks, **overrides)


def lr_find(config=None, **kwargs):
    """The learning-rate range test; see cnnlab.train.lr_range.lr_find."""
    from .lr_range import lr_find as _lr_find

    return _lr_find(config, **kwargs)


def evaluate(model, loader, **kwargs):
    """Plain cross-entropy, top-1, top-5 and counts of `model` over `loader`; see cnnlab.train.scoring."""
    from .scoring import evaluate as _evaluate

    return _evaluate(model, loader, **kwargs)
