"""Training engine: `cnnlab.train(config)` / `cnnlab.train.train(config)` runs the loop of the lectures
(PyTorch's zero_grad → forward → loss → backward → step) with checkpoints, resume, EMA, schedules,
early stopping, snapshot ensembles and torchrun data parallelism.

Why the package itself is callable: the issue asks for `cnnlab.train(...)` while `cnnlab.train` is also
this package. Exporting the function from cnnlab/__init__.py instead would shadow the package: Python
then binds `import cnnlab.train as t` to the function and `cnnlab.train.config` raises AttributeError.
A module whose class forwards `__call__` to `train` keeps both meanings valid, whatever was imported
first. For the same reason no function here shares its name with a submodule (importing the submodule
would overwrite the attribute): `lr_find` lives in `lr_range.py`. Heavy modules (trainer, torch) load on
first call only.
"""

from __future__ import annotations

import sys
import types

from .config import TrainConfig

__all__ = ["TrainConfig", "train", "lr_find"]


def train(config=None, *, resume=None, hooks=None, **overrides):
    """Train as `config` (a TrainConfig or a dict of its fields, plus keyword overrides) says; returns a
    TrainResult. `resume=RUN_DIR` continues an interrupted run exactly. See cnnlab.train.run.train."""
    from .run import train as _train

    return _train(config, resume=resume, hooks=hooks, **overrides)


def lr_find(config=None, **kwargs):
    """The learning-rate range test; see cnnlab.train.lr_range.lr_find."""
    from .lr_range import lr_find as _lr_find

    return _lr_find(config, **kwargs)


class _CallableModule(types.ModuleType):
    """Module type whose instances forward calls to `train` (so `cnnlab.train(...)` works)."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
