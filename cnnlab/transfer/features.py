"""A trained network as a fixed feature extractor (DeCAF, Razavian et al.): the activations of any named
layer or stage for every image of a dataset, computed once in eval mode, batched, pooled, and cached in an
.npz that `cnnlab probe` reads.

Features file (format "cnnlab-features", schema_version 1; this module owns it):
    x_train, y_train, x_val, y_val, x_test, y_test   float32 (N, D) features and int64 labels per split
    classes                                           the class names (index = label)
    meta                                              JSON: format, schema_version, source, layer, pool,
                                                      data, shape before pooling, cache key
The cache key covers everything that decides the numbers (the weights file's size and mtime, the model
spec and --init, the data's files, layer, pooling, image size, seed); an existing --out file with the
same key is returned as is.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError

FORMAT = "cnnlab-features"
SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
POOLS = ("avg", "max", "flatten")


@dataclass
class FeatureSet:
    """Features and labels per split, the class names and how they were made (`meta`)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: list[str]
    meta: dict
    path: Path | None = None
    cached: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(next(iter(self.x.values())).shape[1])

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.y.items()}


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the tapped layer has run."""


def resolve_layer(model: nn.Module, layer: str) -> nn.Module | None:
    """The module whose output --layer names (None for "pre-logits": the vector fed to the final linear
    layer, from forward_head). Stage names (stem, stageK, head) tap the stage's output module."""
    if layer == "pre-logits":
        if not hasattr(model, "forward_head"):
            raise ConfigError("--layer pre-logits needs a cnnlab model (forward_head)")
        return None
    names = tuple(getattr(model, "stage_names", ()))
    if layer in names:
        return model.get_stage(layer).output
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"--layer {layer}: no such layer; use pre-logits, a stage ({', '.join(names)}) or a "
                          f"module path as `cnnlab summary` lists them (e.g. "
                          f"{next((n for n, _ in model.named_modules() if n), '?')})") from None


def pool_features(t: torch.Tensor, pool: str) -> torch.Tensor:
    """(N, C, H, W) maps → (N, C) by global average or max pooling, or (N, C·H·W) flattened; (N, D) as is."""
    if t.ndim == 4 and pool == "avg":
        return t.mean(dim=(2, 3))
    if t.ndim == 4 and pool == "max":
        return t.amax(dim=(2, 3))
    return t.flatten(1)


@torch.inference_mode()
def layer_outputs(model: nn.Module, module: nn.Module | None, loader, pool: str) -> tuple[np.ndarray, tuple]:
    """(features (N, D) float32, per-image shape before pooling) of `module`'s output over `loader`, in eval
    mode; the forward pass stops as soon as the layer has run (its first call, for a module used twice)."""
    model.eval()
    store: list[torch.Tensor] = []
    shape: tuple = ()

    def hook(_m, _inp, out):
        store.append(out[0] if isinstance(out, (tuple, list)) else out)
        raise _Captured

    handle = module.register_forward_hook(hook) if module is not None else None
    chunks = []
    try:
        for x, _ in loader:
            if module is None:
                out = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                try:
                    model(x)
                except _Captured:
                    pass
                if not store:
                    raise ConfigError("--layer: the layer did not run in the forward pass (an auxiliary head "
                                      "used only in training?)")
                out = store.pop()
            shape = tuple(out.shape[1:])
            chunks.append(pool_features(out.float(), pool).cpu())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(chunks).numpy(), shape


def _stat(path: Path) -> list:
    """Identity of a file or folder for the cache key: size and modification time (recursive for folders)."""
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        entries = sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for p in entries:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        return [str(path.resolve()), len(entries), h.hexdigest()]
    return [str(path)]


def _prepare(source: str, data: str | None, *, weights: str, init: str | None, image_size, channels,
             limit_per_class, seed: int | None):
    """(model in eval mode, dataset, mean, std, identity for the cache key, notes) for a run directory or a
    model spec (a registered name or notation, freshly initialised or started from --init)."""
    import warnings

    from ..errors import CnnlabWarning
    from ..runs import Run
    from ..train.config import TrainConfig
    from ..train.finetune import normalisation, read_init_weights
    from ..train.run import build, fit_input, load_data

    notes: list[str] = []
    if Path(source).is_dir():
        if init is not None:
            raise ConfigError("--init applies to a model name; a run directory brings its own weights")
        if image_size is not None or channels is not None:
            raise ConfigError("--image-size/--channels apply to a model name; a run reads data at its own size")
        run = Run.open(source)
        model = run.model(weights)
        pre = run.preprocess
        cfg = run.config.replace(seed=run.config.seed if seed is None else seed)
        if data is None or data == run.config.data:  # the run's own data, split and labelled as in training
            if limit_per_class is not None:
                cfg = cfg.replace(limit_per_class=limit_per_class)
            dataset = load_data(cfg, run.classes)
            data = run.config.data
        else:  # another dataset, read at the run's geometry (its own labels, not the run's classes)
            cfg = cfg.replace(data=data, limit_per_class=limit_per_class)
            dataset = load_data(cfg)
            want = (pre.channels, *pre.image_size)
            if tuple(dataset.image_shape) != want:
                h = pre.image_size[0] - 2 * pre.pad
                dataset = load_data(cfg.replace(image_size=h, channels=pre.channels))
        mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
        ident = {"run": str(run.path.resolve()), "weights": weights, "file": _stat(run.resolve_weights(weights))}
        return model, dataset, mean, std, {**ident, "data": data}, notes
    if data is None:
        raise ConfigError("--data is required with a model name (a run directory defaults to its own data)")
    seed = 0 if seed is None else seed
    cfg = TrainConfig(model=source, data=data, init=init, image_size=image_size, channels=channels, seed=seed,
                      limit_per_class=limit_per_class).validate()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        init_w = read_init_weights(cfg) if init else None
        dataset = load_data(cfg)
        fitted, _ = fit_input(cfg, dataset)
        if fitted != cfg:
            cfg, dataset = fitted, load_data(fitted)
        torch.manual_seed(seed)
        model = build(cfg, dataset, init=init_w or False)
    notes += [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    mean, std = normalisation(cfg, dataset, init_w)
    ident = {"model": source, "init": init, "init_file": _stat(init_w.path) if init_w else None}
    return model.eval(), dataset, mean, std, {**ident, "data": data}, notes


def extract_features(source: str, layer: str = "pre-logits", data: str | None = None, *,
                     out: str | Path | None = None, pool: str = "avg", weights: str = "final",
                     init: str | None = None, image_size: int | None = None, channels: int | None = None,
                     limit_per_class: int | None = None, seed: int | None = None, batch_size: int = 256,
                     device: str = "cpu") -> FeatureSet:
    """The `layer` activations of `source` (a run directory, or a model name/notation with optional --init
    weights) for every image of `data` (default: the run's own data, split as it was trained), pooled by
    `pool` (avg | max: global pooling of conv maps; flatten). `seed` (default: the run's, else 0) fixes the
    train/val/test split. With `out`, saved there (atomically) — or, when `out` already holds features made
    the same way, read back without computing anything."""
    from ..data import BatchLoader

    if pool not in POOLS:
        raise ConfigError(f"--pool {pool!r}: expected one of {', '.join(POOLS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    if limit_per_class is not None and limit_per_class < 1:  # (a run's config is not re-validated below)
        raise ConfigError(f"--limit-per-class must be a positive integer, got {limit_per_class}")
    if out is not None:
        out = Path(out)
        if out.suffix != ".npz":
            raise ConfigError(f"--out {out}: expected a .npz file name")
        if out.is_dir():
            raise ConfigError(f"--out {out}: is a directory")
        from ..runs import check_writable

        check_writable(out.parent if str(out.parent) else Path("."), "--out")  # before any work, not after it
    start = time.perf_counter()
    model, dataset, mean, std, ident, notes = _prepare(source, data, weights=weights, init=init,
                                                       image_size=image_size, channels=channels,
                                                       limit_per_class=limit_per_class, seed=seed)
    data_path = Path(str(ident["data"])).expanduser()
    key_src = {**ident, "data_files": _stat(data_path) if data_path.exists() else None, "layer": layer,
               "pool": pool, "image_size": image_size, "channels": channels, "limit": limit_per_class,
               "seed": seed, "format": [FORMAT, SCHEMA_VERSION]}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=str).encode()).hexdigest()
    if out is not None and out.is_file():
        try:
            old = load_features(out)
        except DataError:
            old = None
        if old is not None and old.meta.get("key") == key:
            old.cached, old.notes = True, notes
            return old
    module = resolve_layer(model, layer)
    model = model.to(device)
    xs, ys, shape = {}, {}, ()
    for split in SPLITS:
        part = getattr(dataset, split)
        loader = BatchLoader(part, batch_size, mean=mean, std=std, device=device)
        if len(part):
            xs[split], shape = layer_outputs(model, module, loader, pool)
        else:
            xs[split] = np.zeros((0, 0), dtype=np.float32)
        ys[split] = part.labels.numpy().astype(np.int64)
    meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "source": str(source), "layer": layer,
            "pool": pool, "data": str(ident["data"]), "shape": list(shape), "key": key,
            "model": type(model).__name__}
    fs = FeatureSet(xs, ys, list(dataset.classes), meta, out, False, time.perf_counter() - start, notes)
    if out is not None:
        save_features(fs, out)
    return fs


def save_features(fs: FeatureSet, path: str | Path) -> Path:
    """Write a FeatureSet as the features .npz (atomically: temp file + rename)."""
    from ..utils.io import atomic_path

    path = Path(path)
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.ascontiguousarray(fs.x[split], dtype=np.float32)
        arrays[f"y_{split}"] = np.ascontiguousarray(fs.y[split], dtype=np.int64)
    arrays["classes"] = np.array(fs.classes, dtype=str)
    arrays["meta"] = np.array(json.dumps(fs.meta))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    fs.path = path
    return path


def load_features(path: str | Path) -> FeatureSet:
    """Read a features .npz (see the module docstring); DataError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such features file (make one with `cnnlab features`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zip errors, truncated files, pickled object arrays: all unreadable here
        from ..utils.limits import short_text

        raise DataError(f"{path}: not a readable features .npz ({type(exc).__name__}: {short_text(exc, 90)})") \
            from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError):
        raise DataError(f"{path}: not a cnnlab features file (no meta record; make one with `cnnlab features`)") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a cnnlab features file (format {meta.get('format')!r})")
    if not isinstance(meta.get("schema_version"), int) or meta["schema_version"] > SCHEMA_VERSION:
        raise DataError(f"{path}: features schema_version {meta.get('schema_version')!r} is newer than this "
                        f"cnnlab understands ({SCHEMA_VERSION})")
    x, y = {}, {}
    for split in SPLITS:
        xs, ys = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if xs is None or ys is None or xs.ndim != 2 or ys.ndim != 1 or len(xs) != len(ys):
            raise DataError(f"{path}: x_{split}/y_{split} missing or of mismatched lengths")
        if not np.issubdtype(xs.dtype, np.floating) or not np.issubdtype(ys.dtype, np.integer):
            raise DataError(f"{path}: x_{split} must hold floats and y_{split} integer labels")
        if not np.isfinite(xs).all():
            raise DataError(f"{path}: x_{split} holds NaN or infinite values")
        if len(ys) and ys.min() < 0:
            raise DataError(f"{path}: y_{split} holds a negative label ({int(ys.min())})")
        x[split], y[split] = xs.astype(np.float32, copy=False), ys.astype(np.int64, copy=False)
    classes = [str(c) for c in arrays.get("classes", np.array([], dtype=str)).tolist()]
    top = max((int(v.max()) for v in y.values() if len(v)), default=-1)
    if top >= len(classes):
        raise DataError(f"{path}: label {top} out of range for {len(classes)} classes")
    dims = {v.shape[1] for v in x.values() if len(v)}
    if len(dims) > 1:
        raise DataError(f"{path}: splits have different feature sizes {sorted(dims)}")
    return FeatureSet(x, y, classes, meta, path)
