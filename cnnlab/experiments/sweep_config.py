"""The sweep file (`cnnlab sweep --config sweep.yaml`): one typed dataclass, SweepConfig, read and checked
before any trial runs.

    study: lenet-lr                 # the Optuna study's name (default: the file's name)
    sampler: tpe                    # grid | random | tpe
    trials: 8                       # trials to finish, all workers together (grid: default its size)
    seed: 0                         # sampler seed (each extra worker adds 1000)
    pruner: median                  # median (on validation accuracy per epoch) | none
    pruner_startup_trials: 3        # trials that run in full before the pruner prunes
    pruner_warmup_epochs: 1         # epochs every trial runs before it can be pruned
    heartbeat_interval: 10          # seconds between a running trial's heartbeats
    grace_period: 60                # a trial silent this long is failed and queued again (its worker died)
    storage: null                   # Optuna storage URL (default: sqlite in the runs root's index.sqlite)
    train:                          # training options of every trial (TrainConfig keys)
      model: lenet5
      epochs: 4
    space:                          # the options searched
      lr: {low: 0.001, high: 0.5, log: true}     # a range: float or int by the option's type
      batch_size: [16, 32, 64]                   # a list: categorical
      weight_decay: {low: 0, high: 0.001, step: 0.0005}
      model_opts.act: [relu, tanh]               # a model option

The objective is the trial's validation accuracy from its result.json (maximised); the test split is never
looked at."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "none")
MAX_GRID_POINTS = 100_000  # far beyond any grid a sweep finishes


@dataclass(frozen=True)
class Param:
    """One searched option: `choices` (categorical) or a range low..high (log scale, or a grid `step`)."""

    name: str
    kind: str  # "categorical", "int", "float"
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def grid_count(self) -> int:
        """How many values a grid search tries (counted, not listed: a tiny step would list billions)."""
        if self.kind == "categorical":
            return len(self.choices)
        steps = (self.high - self.low) / self.step  # inf for a denormal step, which int() refuses: capped
        return int(math.floor(min(steps, 1e30) + 1e-9)) + 1

    def grid(self) -> list:
        """The values a grid search tries."""
        if self.kind == "categorical":
            return list(self.choices)
        n = self.grid_count()
        values = [self.low + i * self.step for i in range(n)]
        return [int(round(v)) for v in values] if self.kind == "int" else [round(v, 12) for v in values]


@dataclass
class SweepConfig:
    study: str
    sampler: str = "tpe"
    trials: int | None = None
    seed: int = 0
    metric: str = "val_accuracy"
    pruner: str = "median"
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 1
    heartbeat_interval: int = 10
    grace_period: int = 60
    storage: str | None = None
    train: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)

    @property
    def params(self) -> list[Param]:
        return [parse_param(name, spec, self.source) for name, spec in self.space.items()]

    source: str = "sweep config"

    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            size *= p.grid_count()
        return size

    @property
    def n_trials(self) -> int:
        if self.sampler == "grid":
            return min(self.trials or self.grid_size(), self.grid_size())
        return int(self.trials)

    def trial_config(self, values: dict):
        """The TrainConfig of one trial: the fixed options, then the sampled ones (model_opts.X merged)."""
        from ..train.config import TrainConfig

        merged = dict(self.train)
        opts = dict(merged.get("model_opts") or {})
        for name, value in values.items():
            if name.startswith("model_opts."):
                opts[name.split(".", 1)[1]] = value
            else:
                merged[name] = value
        if opts:
            merged["model_opts"] = opts
        return TrainConfig.from_dict(merged, source=self.source).validate()

    def validate(self) -> "SweepConfig":
        src = self.source
        if not isinstance(self.study, str) or not self.study.strip() or "/" in self.study:
            raise ConfigError(f"{src}: study must be a name without '/', got {self.study!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"{src}: unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"{src}: unknown pruner {self.pruner!r}; known: {', '.join(PRUNERS)}")
        if self.metric != "val_accuracy":
            raise ConfigError(f"{src}: metric must be val_accuracy (the objective is the validation accuracy; "
                              f"tuning on the test split would make its score meaningless), got {self.metric!r}")
        for name in ("seed", "pruner_startup_trials", "pruner_warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{src}: {name} must be a non-negative integer, got {value!r}")
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{src}: {name} must be a positive integer (seconds), got {value!r}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"{src}: grace_period ({self.grace_period}) must exceed heartbeat_interval "
                              f"({self.heartbeat_interval})")
        if not isinstance(self.train, dict) or not isinstance(self.space, dict):
            raise ConfigError(f"{src}: train and space must be mappings of option: value")
        if not self.space:
            raise ConfigError(f"{src}: space is empty: name at least one option to search")
        if self.trials is not None and (not isinstance(self.trials, int) or isinstance(self.trials, bool)
                                        or self.trials < 1):
            raise ConfigError(f"{src}: trials must be a positive integer, got {self.trials!r}")
        if self.sampler != "grid" and self.trials is None:
            raise ConfigError(f"{src}: give trials: N (only a grid knows its own size)")
        for key in ("out", "overwrite", "quiet"):
            if key in self.train or key in self.space:
                raise ConfigError(f"{src}: {key} is set per trial by the sweep")
        params = self.params
        if self.sampler == "grid":
            for p in params:
                if p.kind != "categorical" and p.step is None:
                    raise ConfigError(f"{src}: space.{p.name}: a grid needs a list of values or a range with step")
            size = self.grid_size()
            if size > MAX_GRID_POINTS:  # refused before the study is created (its lists would fill memory)
                from ..utils.limits import short_int

                counts = ", ".join(f"{p.name} {short_int(p.grid_count())}" for p in params)
                raise ConfigError(f"{src}: the grid has {short_int(size)} points ({counts} values); at most "
                                  f"{MAX_GRID_POINTS:,}: use a larger step or the random/tpe sampler")
        self._check_extremes(params)
        return self

    def _check_extremes(self, params: list[Param]) -> None:
        """Every choice and both ends of every range make a valid training config (fail now, not in trial 5)."""
        self.trial_config({})  # the fixed options first: their error is not blamed on a searched one
        for p in params:
            for value in (p.choices if p.kind == "categorical" else (p.low, p.high)):
                try:
                    self.trial_config({p.name: value})
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: space.{p.name} = {value!r}: {exc}") from None


def parse_param(name: str, spec: Any, source: str) -> Param:
    """space.NAME's value as a Param (its kind from TrainConfig's field type, or from the numbers given)."""
    from ..train.config import TrainConfig

    where = f"{source}: space.{name}"
    field_types = {f.name: str(f.type) for f in fields(TrainConfig)}
    if name.startswith("model_opts."):
        if not name.split(".", 1)[1]:
            raise ConfigError(f"{where}: name the model option, e.g. model_opts.act")
        declared = None
    elif name in field_types:
        declared = field_types[name]
        if name in ("model_opts",):
            raise ConfigError(f"{where}: search model options one at a time, as model_opts.NAME")
    else:
        raise ConfigError(f"{where}: not a training option (see `cnnlab train --help`; model options as "
                          f"model_opts.NAME)")
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in spec):
            raise ConfigError(f"{where}: choices must be plain values (numbers, names, true/false)")
        return Param(name, "categorical", choices=tuple(spec))
    if not isinstance(spec, dict) or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected a list of values or {{low: A, high: B[, log: true][, step: S]}}")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise ConfigError(f"{where}: low, high and step must be numbers")
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{where}: low, high and step must be finite numbers, got {low}, {high}, {step}")
    if declared is not None and not declared.startswith(("int", "float")):
        raise ConfigError(f"{where}: {name} is not numeric; give a list of values")
    is_int = declared.startswith("int") if declared else all(isinstance(v, int) for v in numbers)
    if is_int and not all(float(v).is_integer() for v in numbers):
        raise ConfigError(f"{where}: {name} is an integer option; low, high and step must be integers")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be positive")
    kind = "int" if is_int else "float"
    cast = int if is_int else float
    return Param(name, kind, low=cast(low), high=cast(high), log=log, step=None if step is None else cast(step))


def load_sweep_config(path: str | Path, **overrides) -> SweepConfig:
    """Read and check a sweep file; `overrides` (e.g. study, trials, storage from the command line) win."""
    from ..train.config import read_config_file

    path = Path(path)
    values = read_config_file(path)
    known = {f.name for f in fields(SweepConfig)} - {"source"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values.setdefault("study", path.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("train", "space"):
        if values.get(key) is None:
            values[key] = {}
    return SweepConfig(**values, source=str(path)).validate()
