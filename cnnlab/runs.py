"""The run directory: the one module that writes and reads it.

A run directory (schema_version 1) holds:

    config.json      {"schema_version": 1, the TrainConfig fields, "num_classes", "in_channels",
                      "image_size": [H, W], "model_options", "classes", "mean", "std", "params",
                      "split_sizes", "preprocess": {...}}
    config.yaml      exactly the TrainConfig fields (loadable with `cnnlab train --config`)
    classes.json     {"classes": [...], "class_to_idx": {...}}
    metrics.jsonl    one JSON object per finished epoch
    model.safetensors            the kept ("final") weights: what result.json's test score was measured on
    model_raw.safetensors        with --ema --ema-eval: the raw weights (final = EMA)
    model_ema.safetensors        with --ema: the EMA weights (final = raw)
    snapshots/snapshot-K.safetensors   with --snapshots M
    eval/<what>/     `cnnlab eval`'s files by default (format owned by cnnlab.eval.report)
    checkpoints/     the exact training state (format owned by cnnlab.train.checkpoint)
    result.json      {"schema_version": 1, "test_accuracy", ...}
    report.html      the run's self-contained report page (cnnlab.viz.report; `cnnlab report`)
    viz/<kind>-<what>.png        pictures `cnnlab viz` draws (filters-<layer>, gradcam-<image>-<layer>, ...)
    init.json        with --init: what loading the weights did (loaded / missing / unexpected / reshaped keys)
    .lock            held (flock) by the process writing the run

A run written before schema versions existed is version 0: the same files without "schema_version", and it
opens the same way. `Run.open(path)` (alias `cnnlab.load_run`) gives the resolved config, classes,
preprocessing, models with any kept weights, loaders for any split, the result and the per-epoch metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import ConfigError
from .train.config import TrainConfig
from .utils.io import remove_stale_temps, save_safetensors_atomic, write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # torch is imported lazily: opening a run to read its config needs none
    from torch import nn

SCHEMA_VERSION = 1
RUN_FILES = ("config.json", "config.yaml", "classes.json", "metrics.jsonl", "model.safetensors",
             "model_raw.safetensors", "model_ema.safetensors", "model_best.safetensors", "result.json",
             "report.html", "init.json")
RUN_DIRS = ("checkpoints", "snapshots", "tensorboard", "viz", "eval")
WEIGHT_KINDS = ("final", "best", "raw", "ema", "snapshot:K")
LOCK = ".lock"


class RunBusy(ConfigError):
    """Another process holds the run directory's lock."""


@dataclass(frozen=True)
class Preprocess:
    """How a run's images reach the model: decoded to `channels`, resized to `image_size` by `resize`
    (image folders), zero-padded by `pad` pixels per side, then normalised with `mean`/`std` ([0, 1] units)."""

    image_size: tuple[int, int]
    channels: int
    resize: str
    pad: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"image_size": list(self.image_size), "channels": self.channels, "resize": self.resize,
                "pad": self.pad, "mean": list(self.mean), "std": list(self.std)}


# --- naming and claiming a run directory --------------------------------------------------------------------

def run_slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a model or data name. Notation strings become their first tokens
    joined by '-' plus a hash of the whole string, so that long notations stay short and distinct."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text) and len(text) <= limit:
        return text
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", text) if t]
    short = "-".join(tokens)[:limit - 9].strip("-") or "model"
    return f"{short}-{zlib.crc32(text.encode()):08x}"


def default_run_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    """runs/<time>-<model>-<data>, made unique with a -2, -3… suffix."""
    data = Path(cfg.data).stem if ("/" in cfg.data or os.sep in cfg.data) else cfg.data
    base = Path(root) / f"{datetime.now():%Y%m%d-%H%M%S}-{run_slug(cfg.model)}-{run_slug(data, 24)}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def check_writable(out: str | Path, option: str = "--out") -> None:
    """Fail now, in one line, if `out` could not be created or written (checked before any work starts)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{option} {path}: cannot be created, {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot be written ({probe} is not writable)")
    if probe.is_dir():
        # os.access answers from permission bits, which root passes: a read-only mount or a folder such as
        # /proc is found only by trying. The probe file has no name (O_TMPFILE) or is removed at once.
        import tempfile

        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as exc:
            raise ConfigError(f"{option} {path}: cannot be written ({probe}: {exc.strerror or exc})") from None


@contextlib.contextmanager
def claim_run_dir(out: str | Path | None, cfg: TrainConfig, overwrite: bool = False) -> Iterator[Path]:
    """Create the run directory and hold its lock while the run is written. A non-empty directory is refused
    unless `overwrite` (which removes exactly the run files listed above) — checked under the lock, so that
    a second process given the same --out can neither clear nor interleave with the first."""
    path = Path(out) if out else default_run_dir(cfg)
    check_writable(path)
    _refuse_non_empty(path, overwrite)  # before writing anything (the lock file included)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot create the directory ({exc.strerror or exc})") from None
    with run_lock(path):
        if _refuse_non_empty(path, overwrite):  # again under the lock: another process may have started
            for name in RUN_FILES:
                (path / name).unlink(missing_ok=True)
            for name in RUN_DIRS:
                shutil.rmtree(path / name, ignore_errors=True)
            remove_leftovers(path)
        yield path


def _refuse_non_empty(path: Path, overwrite: bool) -> bool:
    """True if `path` holds files (to be replaced: `overwrite`); ConfigError if it does and not `overwrite`."""
    if not path.is_dir() or not any(p.name != LOCK for p in path.iterdir()):
        return False
    if not overwrite:
        hint = f"--resume {path} to continue it" if (path / "config.yaml").is_file() else "choose another --out"
        raise ConfigError(f"--out {path}: directory exists and is not empty (use --overwrite to replace it, "
                          f"or {hint})")
    return True


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that atomic writes killed mid-write left in the run directory and its
    checkpoints/ and snapshots/ folders (the caller holds the run's lock: nobody else writes there)."""
    run_dir = Path(run_dir)
    removed = remove_stale_temps(run_dir, all_of_them=True)
    for name in ("checkpoints", "snapshots"):
        if (run_dir / name).is_dir():
            removed += remove_stale_temps(run_dir / name, all_of_them=True)
    return removed


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold RUN/.lock (an advisory flock) while writing the run: a second process on the same directory is
    refused at once, and a crashed holder releases it (the kernel drops flocks of a dead process)."""
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot write the run's lock file ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir}: another cnnlab process is writing this run (lock {path} is held)") from None
        yield
    finally:
        os.close(fd)


# --- writing ---------------------------------------------------------------------------------------------------

def write_run_config(run_dir: Path, cfg: TrainConfig, *, classes: list[str], image_shape: tuple[int, int, int],
                     model_options: dict, mean, std, params: int, split_sizes: dict) -> None:
    """config.json, config.yaml and classes.json of a new run."""
    import yaml

    c, h, w = image_shape
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    pre = Preprocess((h, w), c, cfg.resize, int(getattr(cfg, "pad", 0) or 0), tuple(mean), tuple(std))
    write_json_atomic(run_dir / "config.json", {
        "schema_version": SCHEMA_VERSION, **cfg.to_dict(), "num_classes": len(classes), "in_channels": c,
        "image_size": [h, w], "model_options": model_options, "classes": list(classes), "mean": mean,
        "std": std, "params": params, "split_sizes": split_sizes, "preprocess": pre.to_dict()})
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json_atomic(run_dir / "classes.json", {"classes": list(classes),
                                                 "class_to_idx": {k: i for i, k in enumerate(classes)}})


def write_weights(run_dir: Path, kind: str, state_dict: dict, metadata: dict | None = None) -> Path:
    """Save one set of kept weights: kind final | raw | ema | best | snapshot:K."""
    path = weights_path(run_dir, kind)
    save_safetensors_atomic(state_dict, path, metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def write_result(run_dir: Path, result: dict) -> None:
    write_json_atomic(run_dir / "result.json", {"schema_version": SCHEMA_VERSION, **result})


def write_init_report(run_dir: Path, report: dict) -> None:
    """init.json: what --init loaded into the model when the run started (kept for its result.json on resume)."""
    write_json_atomic(run_dir / "init.json", {"schema_version": SCHEMA_VERSION, **report})


def read_init_report(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "init.json"
    if not path.is_file():
        return None
    report = read_json(path)
    report.pop("schema_version", None)
    return report


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
        """On resume: keep the records of the first `epoch` epochs (later ones were written after the
        checkpoint; a half-written last line is a kill during the write and is dropped too)."""
        if self.enabled and self.path.is_file():
            keep = [r for r in read_metrics(self.path.parent) if r.get("epoch", 0) <= epoch]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # e.g. a full disk: name the file (a half line is dropped on resume)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        if self.tb is not None:
            step = record.get("epoch", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def eval_dir(run_dir: str | Path, split: str, weights: str, tta: str | None = None, ensemble: bool = False,
             data: str | None = None) -> Path:
    """RUN/eval/<split>-<weights>[-<tta>][-ensemble][-on-<data>]: where `cnnlab eval` writes by default."""
    parts = [split, weights.replace(":", "")] + ([tta] if tta else []) + (["ensemble"] if ensemble else [])
    if data:
        parts.append("on-" + run_slug(Path(data).stem if ("/" in data or os.sep in data) else data, 24))
    return Path(run_dir) / "eval" / "-".join(parts)


# --- reading ---------------------------------------------------------------------------------------------------

def weights_path(run_dir: str | Path, kind: str) -> Path:
    run_dir = Path(run_dir)
    if kind in ("final", "raw", "ema", "best"):
        return run_dir / ("model.safetensors" if kind == "final" else f"model_{kind}.safetensors")
    m = re.fullmatch(r"snapshot:(\d+)", kind)
    if m:
        return run_dir / "snapshots" / f"snapshot-{int(m.group(1))}.safetensors"
    raise ConfigError(f"--weights {kind!r}: expected one of {', '.join(WEIGHT_KINDS)}")


def viz_path(run_dir: str | Path, *parts: str) -> Path:
    """RUN/viz/<part>-<part>....png, each part made file-name safe: where `cnnlab viz` writes a picture."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("_") or "x" for p in parts]
    return Path(run_dir) / "viz" / ("-".join(safe) + ".png")


def report_path(run_dir: str | Path) -> Path:
    """RUN/report.html: the run's report page."""
    return Path(run_dir) / "report.html"


def read_json(path: Path) -> dict:
    """A JSON object from a run file; one-line ConfigError naming the file when it is missing or corrupt."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return value


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl's records; a half-written last line (a kill during the write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class Run:
    """A run directory opened for reading: `Run.open(path)` / `cnnlab.load_run(path)`."""

    def __init__(self, path: Path, info: dict, config: TrainConfig):
        self.path, self.info, self.config = path, info, config
        self.schema_version = int(info.get("schema_version", 0))

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path}: no such run directory")
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: not a run directory (no config.json)")
        info = read_json(path / "config.json")
        version = info.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(f"{path}/config.json: schema_version {version!r} is newer than this cnnlab "
                              f"understands ({SCHEMA_VERSION}); upgrade cnnlab")
        if (path / "config.yaml").is_file():  # exactly the TrainConfig fields
            config = TrainConfig.load(path / "config.yaml")
        else:  # config.json's flat fields, less the derived values stored under a field's name
            fields = TrainConfig.field_names() - {"image_size"}
            config = TrainConfig.from_dict({k: v for k, v in info.items() if k in fields},
                                           source=f"{path}/config.json").validate()
        return cls(path, info, config)

    # what the run was trained on
    @property
    def classes(self) -> list[str]:
        classes = self.info.get("classes")
        if classes is None and (self.path / "classes.json").is_file():
            classes = read_json(self.path / "classes.json").get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ConfigError(f"{self.path}: the run records no class list")
        return classes

    @property
    def num_classes(self) -> int:
        return int(self.info.get("num_classes") or len(self.classes))

    @property
    def preprocess(self) -> Preprocess:
        """Image size after padding, channels, resize policy, pad and normalisation the run was trained with
        (version 0 runs: from the same flat config.json fields, pad 0)."""
        info = self.info
        size = info.get("image_size")
        if size is None:
            raise ConfigError(f"{self.path}/config.json: no image_size recorded")
        try:
            hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)[-2:]
            c = int(info.get("in_channels") or 1)
            mean = tuple(float(v) for v in info.get("mean", [0.0] * c))
            std = tuple(float(v) for v in info.get("std", [1.0] * c))
        except (TypeError, ValueError):
            raise ConfigError(f"{self.path}/config.json: image_size/in_channels/mean/std are malformed") from None
        if len(hw) != 2 or len(mean) != c or len(std) != c:
            raise ConfigError(f"{self.path}/config.json: image_size/mean/std do not match {c} channels")
        return Preprocess(hw, c, self.config.resize, self.config.pad, mean, std)

    @property
    def model_options(self) -> dict:
        return dict(self.info.get("model_options") or self.config.model_opts)

    @property
    def result(self) -> dict | None:
        path = self.path / "result.json"
        return read_json(path) if path.is_file() else None

    @property
    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    @property
    def finished(self) -> bool:
        return (self.path / "result.json").is_file()

    def weight_kinds(self) -> list[str]:
        """The kinds of weights this run kept (e.g. ['final', 'ema', 'snapshot:1', 'snapshot:2'])."""
        kinds = [k for k in ("final", "best", "raw", "ema") if weights_path(self.path, k).is_file()]
        snaps = sorted(self.path.glob("snapshots/snapshot-*.safetensors"),
                       key=lambda p: int(p.stem.rpartition("-")[2]))
        return kinds + [f"snapshot:{p.stem.rpartition('-')[2]}" for p in snaps]

    def resolve_weights(self, kind: str) -> Path:
        """The file holding weights `kind`; aliases: with --ema-eval, 'ema' is the final weights; without EMA,
        'raw' is the final weights; with early stopping, 'best' is the final weights."""
        cfg = self.config
        if kind == "ema" and cfg.ema_eval:
            kind = "final"
        elif kind == "raw" and not cfg.ema_eval:
            kind = "final"
        elif kind == "best" and cfg.early_stopping and not weights_path(self.path, "best").is_file():
            kind = "final"
        path = weights_path(self.path, kind)
        if not path.is_file():
            have = ", ".join(self.weight_kinds()) or "none (the run did not finish)"
            why = {"ema": " (train with --ema)", "best": " (train with --early-stopping)"}.get(kind, "")
            raise ConfigError(f"{self.path}: no {kind} weights{why}; this run has: {have}")
        return path

    def build_kwargs(self) -> dict:
        """What build_model needs for this run's architecture (without weights)."""
        pre = self.preprocess
        return dict(num_classes=self.num_classes, in_channels=pre.channels, input_size=pre.image_size,
                    **self.model_options)

    def model(self, weights: str | None = "final", device: str = "cpu") -> "nn.Module":
        """The run's model, built with its own options, with weights `weights` loaded (None: freshly
        initialised), in eval mode."""
        from .models import build_model
        from .models.footprint import check_buildable
        from .train.checkpoint import load_into, load_weights

        check_buildable(self.config.model, **self.build_kwargs())  # a tampered config.json allocates nothing
        model = build_model(self.config.model, **self.build_kwargs())
        if weights is not None:
            path = self.resolve_weights(weights)
            load_into(model, load_weights(path, device), path)
        return model.to(device).eval()

    def dataset(self, data: str | None = None):
        """The run's dataset (or `data` read the same way), split as in training, labels by the run's classes."""
        from .train.run import load_data

        cfg = self.config if data is None else self.config.replace(data=data)
        return load_data(cfg, self.classes)

    def loader(self, split: str = "test", *, dataset=None, batch_size: int | None = None, device: str = "cpu"):
        """A BatchLoader over `split` with the run's normalisation (no augmentation, no shuffling)."""
        import torch

        from .data import BatchLoader

        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split {split!r}: expected train, val or test")
        dataset = self.dataset() if dataset is None else dataset
        pre = self.preprocess
        return BatchLoader(getattr(dataset, split), batch_size or self.config.eval_batch_size,
                           mean=torch.tensor(pre.mean), std=torch.tensor(pre.std), device=device,
                           seed=self.config.seed)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.config.model!r}, data={self.config.data!r})"


def load_run(path: str | Path) -> Run:
    """Open a finished (or interrupted) run directory; see `Run`."""
    return Run.open(path)


def resolve_model_spec(spec: str, input_size: tuple[int, int, int] | None = None, num_classes: int | None = None,
                       meta: bool = True):
    """(model, display name, (C, H, W)) for MODEL as a user types it: a saved run directory (its own
    options, input size and class count), a registered name or a notation string. Analysis-only: the
    model is built on the meta device where possible and carries no trained weights. Notation is analysed as
    written: no classifier the user did not write (see analysis.as_written)."""
    from .analysis.as_written import written_notation
    from .analysis.resolve import resolve_model

    if spec.strip() and Path(spec).is_dir():
        run = Run.open(spec)
        pre = run.preprocess
        size = input_size or (pre.channels, *pre.image_size)
        model, _, size = resolve_model(run.config.model, size, num_classes or run.num_classes, meta,
                                       options=run.model_options)
        return model, f"{run.config.model} ({spec})", size
    return written_notation(spec, input_size, num_classes) or resolve_model(spec, input_size, num_classes, meta)
