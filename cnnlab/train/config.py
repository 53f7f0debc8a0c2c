"""TrainConfig: the one typed description of a training run. CLI flags, a YAML/JSON config file and the
Python API all map onto it; the resolved copy is saved in the run directory.

Kept free of torch imports so that `cnnlab --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.folder import RESIZE_POLICIES
from ..errors import ConfigError
from ..transfer.freeze import BN_POLICIES
from ..utils.limits import check_text_file, short_text
from ..utils.safe_yaml import DocumentTooLarge, load_json, load_yaml

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "exponential", "cosine", "onecycle", "cyclic", "warmup")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MONITORS = ("val_acc", "val_loss")
LR_KEYWORDS = ("by-model", "auto")  # --lr's words: the per-model default, or a range test (cnnlab.train.optim)
SEED_MAX = 2**63 - 1  # seeds are 64-bit (signed) integers: torch.Generator.manual_seed's range, less room for salts


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field carrying its CLI help text (and optional choices / flag metadata)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Every option of a training run. Defaults are tuned for time to accuracy on small and medium image sets
    (SGD+Nesterov, one-cycle over 10 epochs, label smoothing, the batch size by the data and the learning
    rate by the model; measured in benchmarks/time_to_accuracy.py and benchmarks/defaults.py)."""

    # what to train on what
    model: str = _f("lenet5", "model name (see `cnnlab models`) or layer notation", positional=True)
    data: str = _f("digits", "dataset name (digits, mnist, fashion-mnist, kmnist, cifar10, cifar100) or a "
                             "path to an image folder / .npz")
    model_opts: dict = _f({}, "model options as KEY=VALUE (repeatable), e.g. act=relu", flag="--model-opt")
    image_size: int | None = _f(None, "resize images to SIZE×SIZE (default: the dataset's own size; digits: 32)")
    channels: int | None = _f(None, "convert images to grey (1) or RGB (3) (default: as the data comes)")
    pad: int = _f(0, "zero-pad every image by P pixels per side (set automatically when a model's fixed input is a "
                     "little larger than the data, e.g. LeNet-5 on 28x28 MNIST: 2, as LeCun et al. did)")
    resize: str = _f("shorter-crop", "image-folder resize policy: shorter side + centre crop, or squash",
                     choices=RESIZE_POLICIES)
    data_dir: str | None = _f(None, "where datasets are cached/downloaded")
    offline: bool = _f(False, "never download; fail if the data is not cached")
    limit_per_class: int | None = _f(None, "keep at most N training images per class (quick experiments)")
    augment: str | None = _f(None, "batch augmentation spec, e.g. 'crop:4,flip' or 'rotate:10,translate:0.1'")
    # optimisation
    # 10, not 20: one-cycle anneals over the whole run, so a shorter run reaches a target sooner (LeNet-5
    # crosses 95 % on USPS in epoch 5 of 8 or 10 at batch 64, in epoch 7 of 20 at 32) and still ends at
    # 98 %+ on the digits (README "Training defaults")
    epochs: int = _f(10, "number of passes over the training split")
    # by the data when not given (cnnlab.train.optim.default_batch_size): the largest of 128, 64, 32 that
    # keeps 64 steps per epoch (a CPU runs larger batches faster per image; small sets need the steps)
    batch_size: int | None = _f(None, "training mini-batch size per process (default: 128, 64 or 32, the largest "
                                      "that gives an epoch at least 64 steps)")
    eval_batch_size: int = _f(512, "evaluation batch size")
    optimizer: str = _f("sgd", "optimizer", choices=OPTIMIZERS)
    # by-model: one rate does not train every family (SGD at 0.1 leaves VGG-11 at chance level): 0.1 for nets
    # whose every ReLU follows a normalisation layer or with bounded units only, 0.02 for others, both per 32
    # images of batch (cnnlab.train.optim.default_lr; measured in benchmarks/defaults.py). Saved as a number.
    lr: float | str = _f("by-model", "(peak) learning rate; 'by-model': 0.1 for a net whose every ReLU follows "
                                     "a normalisation layer, or with tanh/sigmoid units only, 0.02 for others, "
                                     "both times batch-size/32; 'auto': a short range test picks it for this "
                                     "model and data (the value found is saved with the run)", parse="lr")
    momentum: float = _f(0.9, "SGD momentum (adam/adamw: beta1)")
    nesterov: bool = _f(True, "Nesterov momentum for SGD")
    weight_decay: float = _f(5e-4, "L2 weight decay, applied to weights only (not BN parameters or biases)")
    decay_bn_bias: bool = _f(False, "also apply weight decay to BN parameters and biases")
    l1: float = _f(0.0, "L1 penalty coefficient on weights (adds l1*sum|w| to the loss; promotes sparsity)")
    schedule: str = _f("onecycle", "learning-rate schedule (cyclic = snapshot-ensemble cosine cycles; warmup = "
                                   "constant after --warmup-epochs)", choices=SCHEDULES)
    # 0: one-cycle already warms up (from lr/25 over the first 30 % of the steps)
    warmup_epochs: float = _f(0.0, "linear learning-rate warm-up length in epochs (combines with any schedule)")
    step_size: int = _f(30, "step schedule: epochs between decays")
    gamma: float = _f(0.1, "step schedule decay factor; plateau: factor applied on a plateau (÷10)")
    exp_gamma: float = _f(0.9, "exponential schedule: factor per epoch")
    plateau_patience: int = _f(3, "plateau schedule: epochs without val improvement before decaying")
    min_lr: float = _f(0.0, "cosine schedule: final learning rate")
    # kept at 0.1: 0 reached the same test accuracy in the same epochs (LeNet-5 on USPS, batch 128)
    label_smoothing: float = _f(0.1, "label smoothing for the cross-entropy loss")
    clip_grad: float = _f(0.0, "clip the gradient norm to this value (0 = off)")
    dropout: float | None = _f(None, "dropout rate (models with a `dropout` option)")
    drop_path_rate: float | None = _f(None, "stochastic-depth rate (models with a `drop_path_rate` option)")
    # averaging, ensembling, stopping
    ema: bool = _f(False, "keep an exponential moving average (Polyak) of the weights, BN buffers included")
    ema_decay: float = _f(0.999, "EMA decay (warmed up as min(decay, (1+n)/(10+n)))")
    ema_eval: bool = _f(False, "use the EMA weights for early stopping, the test score and model.safetensors")
    snapshots: int = _f(0, "snapshot ensembling: M cosine cycles, one snapshot saved per cycle (0 = off; "
                           "sets the schedule to cyclic)")
    early_stopping: int = _f(0, "stop after N epochs without validation improvement, restore the best (0 = off)")
    monitor: str = _f("val_acc", "validation metric for early stopping", choices=MONITORS)
    target_accuracy: float | None = _f(None, "stop once validation top-1 reaches this accuracy (time to accuracy; "
                                             "result.json records reached/seconds_to_target/epochs_to_target)")
    eval_every: int = _f(0, "validate every N optimizer steps as well as at epoch ends (0 = per epoch only); "
                            "with --target-accuracy the run can stop mid-epoch")
    # transfer learning (cnnlab.transfer): where the weights start, what stays frozen, per-stage learning rates
    init: str | None = _f(None, "start from trained weights: a run directory, a .safetensors/.pt/.pth file, an "
                                "http(s) URL (downloaded once into the cache), or published ImageNet weights: "
                                "imagenet (for this model) or torchvision:NAME; a head of another class count is "
                                "re-initialised")
    init_sha256: str | None = _f(None, "expected SHA-256 (hex, or its first 8+ digits) of the --init file or URL")
    freeze: str | None = _f(None, "freeze stages: all-but-head, up-to:stageK, or a list such as stem,stage1")
    bn: str = _f("freeze", "BatchNorm inside frozen stages: freeze (eval mode, γ/β fixed), affine (statistics "
                           "fixed, γ/β trained) or train (statistics adapt to the new data)", choices=BN_POLICIES)
    lr_mult: str | None = _f(None, "per-stage learning-rate multipliers, e.g. head=1,stage4=0.1,*=0.01")
    unfreeze_every: int = _f(0, "gradual unfreezing: release one frozen stage every K epochs, top stage first "
                                "(0 = off; needs --freeze)")
    # reproducibility & run directory
    seed: int = _f(0, "seed for the split, initialisation, data order and augmentation")
    out: str | None = _f(None, "run directory (default runs/<time>-<model>-<data>)")
    overwrite: bool = _f(False, "allow writing into a non-empty --out directory (its old run files are removed)")
    checkpoint_every: int = _f(0, "also checkpoint every N optimizer steps (0 = only at epoch ends)")
    nan_check_every: int = _f(50, "steps between checks of the on-device non-finite-loss flag")
    # speed
    device: str = _f("auto", "device", choices=DEVICES)
    threads: int = _f(0, "CPU threads for torch (0 = the cores idle at start, divided "
                         "between local torchrun processes; a resumed run keeps its thread count)")
    # None: on for CPU training (resolve_channels_last). Training steps timed on this AVX-512 CPU, batch 32-128,
    # 1 and 2 threads, fp32: LeNet-5 1.09-1.58x, LeNet-5 ReLU 1.16x, MobileNet v1 1.40x, GoogLeNet 1.18x, VGG-11-BN
    # 1.03-1.04x, ResNet-18 (CIFAR stem) 1.07-1.08x at 32x32 but 0.81-0.96x at 16x16; whole USPS runs of
    # LeNet-5 1.08x with the same accuracy. On CUDA only with --amp (PyTorch's tensor-core guidance; no GPU here).
    channels_last: bool | None = _f(None, "channels-last memory format (default: on for CPU training, and on CUDA "
                                          "with --amp; --no-channels-last turns it off)")
    compile: bool = _f(False, "torch.compile the model (slow start; pays off for large models only)")
    # none: bf16 autocast made LeNet-5's epoch 6-10 % slower on this AVX-512-BF16 CPU (small convs)
    amp: str = _f("none", "mixed precision: bf16/fp16 autocast on CUDA; bf16 on CPU if asked", choices=AMP_MODES)
    quiet: bool = _f(False, "no progress bar")

    # ---------------------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ConfigError (one line) for an impossible value; returns self.

        Everything a run would trip over later is checked here, before any data is loaded or any run
        directory is written: kinds, non-finite numbers (nan, inf), ranges, the augmentation spec."""
        self._validate_kinds()
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise ConfigError(f"target-accuracy must be in (0, 1], got {self.target_accuracy}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ConfigError(f"eval-every must be a non-negative integer, got {self.eval_every!r}")
        if not isinstance(self.pad, int) or isinstance(self.pad, bool) or not 0 <= self.pad <= 1024:
            raise ConfigError(f"pad must be an integer in [0, 1024], got {self.pad!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "nan_check_every": self.nan_check_every, "step_size": self.step_size,
                    "image_size": self.image_size, "limit_per_class": self.limit_per_class}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"seed must be an integer in [0, 2**63 - 1], got {self.seed}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"unknown {f.name.replace('_', '-')} {getattr(self, f.name)!r}; "
                                  f"known: {', '.join(choices)}")
        if self.lr not in LR_KEYWORDS and (isinstance(self.lr, str) or isinstance(self.lr, bool)):
            raise ConfigError(f"lr must be a positive number, 'by-model' or 'auto', got {self.lr!r}")
        nonneg = ("weight_decay", "l1", "clip_grad", "warmup_epochs", "min_lr", "checkpoint_every",
                  "threads", "snapshots", "early_stopping", "momentum", "plateau_patience")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.lr not in LR_KEYWORDS and not self.lr > 0:
            raise ConfigError(f"lr must be a positive number, 'by-model' or 'auto', got {self.lr}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema-decay must be in (0, 1), got {self.ema_decay}")
        if not self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1) (adam/adamw: beta1), got {self.momentum}")
        for name in ("gamma", "exp_gamma"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name.replace('_', '-')} is a decay factor: it must be in (0, 1], "
                                  f"got {getattr(self, name)}")
        if self.ema_eval and not self.ema:
            raise ConfigError("--ema-eval needs --ema")
        if self.snapshots:
            if self.epochs % self.snapshots:
                raise ConfigError(f"epochs ({self.epochs}) must be a multiple of snapshots ({self.snapshots})")
            self.schedule = "cyclic"
        if self.schedule == "cyclic" and not self.snapshots:
            raise ConfigError("schedule 'cyclic' is snapshot ensembling: give --snapshots M")
        for name in ("dropout", "drop_path_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 1), got {v}")
        if not isinstance(self.model_opts, dict):
            raise ConfigError(f"model_opts must be a mapping, got {self.model_opts!r}")
        from ..data.augment_spec import parse_spec  # torch-free: the grammar and argument rules only

        parse_spec(self.augment)  # a bad token fails now, not on the first batch after the run dir exists
        self._validate_transfer()
        return self

    def _validate_kinds(self) -> None:
        """Every field of the kind it is declared (so `TrainConfig(lr="0.1")` from Python is one line too),
        and every float finite: nan and inf pass comparisons such as `lr > 0` and would poison a run."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and "None" in kind:
                continue
            option = f"--{f.name.replace('_', '-')}"
            if kind.startswith("bool"):
                ok = isinstance(value, bool)
            elif kind.startswith("int"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind.startswith("float"):
                if isinstance(value, str) and "str" in kind:
                    continue  # a keyword such as lr's "auto" or "by-model", checked by name in validate()
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok and not math.isfinite(value):
                    raise ConfigError(f"{option} must be a finite number, got {value!r}")
            elif kind.startswith("str"):
                ok = isinstance(value, str)
            else:
                continue
            if not ok:
                raise ConfigError(f"{option} expects {kind.replace(' | None', '')}, got {value!r}")


    def _validate_transfer(self) -> None:
        """--init, --init-sha256, --freeze, --bn, --lr-mult, --unfreeze-every (syntax and published-weights
        names; files are read when training starts, so a saved run stays valid if its source moves)."""
        from ..transfer.freeze import check_options
        from ..transfer.weights import check_init_spec

        if self.init is not None:
            check_init_spec(self.init, self.model, self.init_sha256)
        elif self.init_sha256 is not None:
            raise ConfigError("--init-sha256 needs --init")
        check_options(self.freeze, self.lr_mult, self.bn, self.unfreeze_every)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def to_dict(self) -> dict:
        """The fields as a plain dict (what config.yaml holds)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (not validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """Build from a mapping (keys are field names; dashes accepted); unknown keys → ConfigError naming them."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown key {key!r}")
            kwargs[name] = _coerce(known[name], value, source)
        return cls(**kwargs)

    @classmethod
    def resolve(cls, config: "TrainConfig | dict | None", overrides: dict, source: str) -> "TrainConfig":
        """What the Python API was given — a TrainConfig, a dict of its fields or None, plus keyword
        `overrides` — as a validated copy (the caller's object is left as it was)."""
        cfg = config if isinstance(config, cls) else cls.from_dict(dict(config or {}), source)
        return cfg.replace(**overrides).validate()

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> "TrainConfig":
        """Read a YAML (or JSON) config file, apply `overrides` (e.g. explicit CLI flags), validate."""
        values = read_config_file(path)
        values.update(overrides or {})
        return cls.from_dict(values, source=str(path)).validate()


def read_config_file(path: str | Path) -> dict:
    """The mapping held in a YAML/JSON file; ConfigError for a missing or malformed one."""
    import yaml

    path = Path(path)
    check_text_file(path, "config file")  # not /dev/zero, a pipe or a huge file: read without end
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text (UTF-8) config file (byte {exc.start}: {exc.reason})") from None
    try:
        values = load_json(text) if path.suffix == ".json" else load_yaml(text)  # safe: no tags, no bombs
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML/JSON ({first})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return values


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Check/convert one value to the field's declared type (ints accepted for floats, etc.)."""
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{source}: {f.name} must not be empty")
    try:
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if kind.startswith("float | str"):  # a number, or a keyword such as lr's "auto"
            return value if isinstance(value, str) and value in LR_KEYWORDS else float(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind.startswith("str"):
            if isinstance(value, (list, tuple)) and f.name == "augment":
                return ",".join(str(v) for v in value)
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
        if kind.startswith("dict"):
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf")) for `epochs: .inf`
        raise ConfigError(f"{source}: {f.name} expects {kind.replace(' | None', '')}, got "
                          f"{short_text(repr(value))}") from None
    return value


def parse_model_opts(items: list[str]) -> dict:
    """['act=relu', 'dropout=0.3'] → {'act': 'relu', 'dropout': 0.3} (values parsed as YAML scalars)."""
    import yaml

    opts: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-opt expects KEY=VALUE, got {item!r}")
        try:
            opts[key.strip()] = load_yaml(raw) if raw.strip() else ""
        except DocumentTooLarge as exc:
            raise ConfigError(f"--model-opt {key.strip()}: {exc}") from None
        except yaml.YAMLError:
            opts[key.strip()] = raw
    return opts


def resolve_channels_last(cfg: TrainConfig, device_type: str) -> TrainConfig:
    """`cfg` with --channels-last's default (None) replaced by the choice for `device_type` ("cpu" or
    "cuda"; see the field's comment), saved as a bool so a resumed run keeps it; `cfg` itself when given."""
    if cfg.channels_last is not None:
        return cfg
    return cfg.replace(channels_last=device_type == "cpu" or cfg.amp != "none")
