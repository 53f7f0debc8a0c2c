"""The lectures' experiments, one command each (`cnnlab experiment run NAME`), and hyperparameter sweeps.

Each experiment is data — the runs it trains and how to tabulate them — in its own module here; the runner
trains the runs (in parallel processes with jobs > 1), records them in the runs index, and writes the
experiment directory: table.md, results.json and a plot."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

# name → module defining EXPERIMENT (one file per experiment), in the order `experiment list` shows them.
EXPERIMENT_MODULES = {
    "lenet-table": "lenet_table",
    "augmentation": "augmentation",
    "relu-vs-tanh": "relu_tanh",
    "ablation": "ablation",
    "plain-vs-residual": "residual",
    "batchnorm": "batchnorm",
    "depthwise": "depthwise",
    "transfer": "transfer",
}


def get_experiment(name: str):
    """The Experiment spec called `name` (ConfigError naming the known ones otherwise)."""
    if name not in EXPERIMENT_MODULES:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENT_MODULES)}")
    return importlib.import_module(f".{EXPERIMENT_MODULES[name]}", __name__).EXPERIMENT


def list_experiments() -> list:
    return [get_experiment(name) for name in EXPERIMENT_MODULES]


def run_experiment(name: str, **options):
    """Train and tabulate experiment `name`; see cnnlab.experiments.runner.run_experiment."""
    from .runner import run_experiment as _run

    return _run(name, **options)
