"""Dataset sources behind `--data`: each decodes once into a uint8 Dataset with seeded splits.

`digits` (offline default), `mnist`/`fashion-mnist`/`kmnist` (IDX), `usps` (LIBSVM text, as the LIBSVM
data sets page publishes it), `cifar10`/`cifar100` (binary), or a path: an image folder (optionally with
train/val/test sub-folders) or a `.npz` with `x`/`y` arrays.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..utils.limits import check_memory, short_int
from .dataset import Dataset, Split
from .splits import limit_per_class as _limit
from .splits import stratified_split

SOURCES = ("digits", "mnist", "fashion-mnist", "kmnist", "usps", "cifar10", "cifar100")
_LUMA = torch.tensor([0.299, 0.587, 0.114])
MAX_UNNAMED_CLASSES = 100_000  # an unnamed .npz's labels 0..K-1: beyond this, K is a corrupt label, not a class


def _size(image_size) -> tuple[int, int] | None:
    """`image_size` (int or (H, W)) as (H, W), or None to keep the native size."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size


def adapt(x: torch.Tensor, channels: int | None, size: tuple[int, int] | None,
          resize: str = "shorter-crop") -> torch.Tensor:
    """Convert uint8 N×C×H×W to `channels` (grey ↔ RGB) and `size` (antialiased bilinear, by `resize`),
    in chunks so no float copy of the whole set exists."""
    c, h, w = x.shape[1:]
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if (channels is None or channels == c) and (size is None or size == (h, w)):
        return x
    oc = channels or c
    oh, ow = size or (h, w)
    check_memory(len(x) * oc * oh * ow, f"{len(x):,} images at {oc}x{short_int(oh)}x{short_int(ow)} (--image-size)")
    out = torch.empty((len(x), oc, oh, ow), dtype=torch.uint8)
    for s in range(0, len(x), 2048):
        chunk = x[s:s + 2048].float()
        if oc == 1 and chunk.shape[1] == 3:
            chunk = (chunk * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        if (oh, ow) != (h, w):
            if resize == "squash":
                chunk = F.interpolate(chunk, size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)
            else:
                scale = max(oh / h, ow / w)
                nh, nw = max(oh, round(h * scale)), max(ow, round(w * scale))
                chunk = F.interpolate(chunk, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
                top, left = (nh - oh) // 2, (nw - ow) // 2
                chunk = chunk[:, :, top:top + oh, left:left + ow]
        out[s:s + 2048] = chunk.round().clamp(0, 255).to(torch.uint8).expand(-1, oc, -1, -1)
    return out


def _carve(labels: torch.Tensor, keep: float, carve: float, seed: int) -> list[torch.Tensor]:
    """Split a training pool stratified in the ratio keep:carve (e.g. train:val from the fractions when the
    source brings its own test split). Returns [kept indices, carved indices]."""
    if keep + carve <= 0:
        raise ConfigError(f"split fractions leave nothing for training (train {keep}, carved {carve})")
    v = carve / (keep + carve)
    return stratified_split(labels, (1 - v, v), seed)


def _check_classes(name: str, classes: list[str], expected: list[str] | None) -> list[str]:
    """The class list a saved run expects (`expected`) must be the source's own: labels are indices, so a
    different list would silently mislabel everything."""
    if expected is not None and list(expected) != list(classes):
        raise DataError(f"{name}: classes {_short(classes)} differ from the saved mapping {_short(expected)}")
    return classes


def _short(names) -> str:
    names = list(names)
    return "[" + ", ".join(names[:5]) + (f", … {len(names)} in all]" if len(names) > 5 else "]")


def assemble(name: str, classes: list[str], train: tuple, test: tuple | None, *, seed: int, fractions,
             limit: int | None, info: dict, channels=None, size=None, resize="shorter-crop") -> Dataset:
    """Build a Dataset from a training pool and an optional official test split (numpy or torch arrays):
    apply limit_per_class, carve val (or split 60/20/20 when there is no test split), adapt size/channels."""
    def tensors(pair):
        x, y = pair
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        return x, torch.as_tensor(np.asarray(y)).long()

    x, y = tensors(train)
    if limit:
        keep = _limit(y, limit, seed)
        x, y = x[keep], y[keep]
    if test is not None:
        xt, yt = tensors(test)
        if limit:
            keep = _limit(yt, limit, seed + 1)
            xt, yt = xt[keep], yt[keep]
        tr, va = _carve(y, fractions[0], fractions[1], seed)
        splits = [(x[tr], y[tr]), (x[va], y[va]), (xt, yt)]
    else:
        tr, va, te = stratified_split(y, fractions, seed)
        splits = [(x[i], y[i]) for i in (tr, va, te)]
    splits = [Split(adapt(xs.contiguous(), channels, size, resize), ys) for xs, ys in splits]
    info = {**info, "image_shape": list(splits[0].image_shape),
            "sizes": {k: len(s) for k, s in zip(("train", "val", "test"), splits)},
            "class_to_idx": {c: i for i, c in enumerate(classes)}}
    return Dataset(name, list(classes), *splits, info=info)


def load_digits(image_size=32, seed: int = 0, fractions=(0.6, 0.2, 0.2), channels=None, limit=None) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 real 8×8 images with 17 grey levels (0-16),
    rescaled to 0-255 and resized (bilinear) to `image_size` (32×32 by default, as LeNet-5 expects)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) * (255.0 / 16.0)
    size = _size(image_size)
    if size is not None and size != (8, 8):
        check_memory(x.numel() * size[0] * size[1] * 4 // 64,
                     f"the digits at {short_int(size[0])}x{short_int(size[1])} (--image-size)")
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    return assemble("digits", [str(i) for i in range(10)], (images, labels), None, seed=seed,
                    fractions=fractions, limit=limit, channels=channels,
                    info={"source": "sklearn.datasets.load_digits", "native_size": [8, 8]})


def _root(name: str, data_dir) -> Path:
    from .download import cache_home

    return Path(data_dir).expanduser() if data_dir else cache_home() / name


def load_idx_source(name: str, *, data_dir=None, offline=False, mirrors=None, checksums=None, **kw) -> Dataset:
    """MNIST / Fashion-MNIST / KMNIST: files used as is from `data_dir`, else fetched into the cache."""
    from .download import download
    from .idx import FILES, MNIST_FAMILY, find_file, read_idx_pair

    spec = MNIST_FAMILY[name]
    root = _root(name, data_dir)
    paths = []
    for fname, md5 in zip(FILES, spec["md5"]):
        found = find_file(root, fname) if data_dir else None
        if found is None:
            found = download(fname, [m + fname for m in (mirrors or spec["mirrors"])], root,
                             (checksums or {}).get(fname, md5), offline=offline)
        paths.append(found)
    xtr, ytr = read_idx_pair(paths[0], paths[1])
    xte, yte = read_idx_pair(paths[2], paths[3])
    top = int(max(ytr.max(initial=0), yte.max(initial=0)))
    if top >= len(spec["classes"]):
        raise DataError(f"{paths[1].name}: label {top} out of range for {len(spec['classes'])} classes")
    info = {"source": name, "paths": [str(p) for p in paths], "native_size": list(xtr.shape[1:])}
    return assemble(name, spec["classes"], (xtr[:, None], ytr), (xte[:, None], yte), info=info, **kw)


def load_usps_source(*, data_dir=None, offline=False, mirrors=None, checksums=None, **kw) -> Dataset:
    """USPS, the official 7,291/2,007 split: `usps.bz2` and `usps.t.bz2` (or their decompressed twins)
    from `data_dir` as they are, else fetched into the cache and checksummed."""
    from .download import download
    from .libsvm import USPS, find_usps_file, read_usps

    root = _root("usps", data_dir)
    paths = []
    for fname, md5 in USPS["files"].values():
        found = find_usps_file(root, fname) if data_dir else None
        if found is None:
            found = download(fname, [m + fname for m in (mirrors or USPS["mirrors"])], root,
                             (checksums or {}).get(fname, md5), offline=offline)
        paths.append(found)
    xtr, ytr = read_usps(paths[0])
    xte, yte = read_usps(paths[1])
    info = {"source": "usps", "paths": [str(p) for p in paths], "native_size": list(USPS["shape"])}
    return assemble("usps", USPS["classes"], (xtr[:, None], ytr), (xte[:, None], yte), info=info, **kw)


def load_cifar_source(name: str, *, data_dir=None, offline=False, mirrors=None, checksums=None, **kw) -> Dataset:
    """CIFAR-10 / CIFAR-100 binary: the .bin files from `data_dir` (or its official sub-folder), else the
    official archive fetched into the cache and extracted."""
    from .cifar import CIFAR, extract, locate, read_cifar
    from .download import download

    spec = CIFAR[name]
    root = _root(name, data_dir)
    folder = locate(root, spec)
    if folder is None:
        archive = spec["archive"]
        md5 = (checksums or {}).get(archive, spec["md5"])
        path = download(archive, [m + archive for m in (mirrors or spec["mirrors"])], root, md5,
                        offline=offline)
        folder = extract(path, root, spec)
    xtr, ytr, xte, yte, classes = read_cifar(folder, spec)
    info = {"source": name, "paths": [str(folder)], "native_size": [32, 32]}
    return assemble(name, classes, (xtr, ytr), (xte, yte), info=info, **kw)


def load_npz(path: Path, classes: list[str] | None = None, **kw) -> Dataset:
    """A `.npz` with `x`/`y` (and optionally `x_test`/`y_test`, `classes`): class names from the file,
    else from `classes` (a saved run's list), else "0".."K-1" for the largest label K-1."""
    from .folder import read_npz

    data = read_npz(path)
    xtr, ytr = data["train"]
    top = int(ytr.max(initial=0))
    if data["test"] is not None:
        top = max(top, int(data["test"][1].max(initial=0)))
    if data["classes"] is not None:
        classes = _check_classes(str(path), data["classes"], classes)
    if not classes and top >= MAX_UNNAMED_CLASSES:
        raise DataError(f"{path}: largest label {top}: labels are class indices 0..K-1, and without a 'classes' "
                        f"array K is at most {MAX_UNNAMED_CLASSES:,}")
    classes = classes or [str(i) for i in range(top + 1)]
    if top >= len(classes):
        raise DataError(f"{path}: label {top} out of range for {len(classes)} classes")
    info = {"source": "npz", "paths": [str(path)], "native_size": list(xtr.shape[2:])}
    return assemble(path.stem, classes, data["train"], data["test"], info=info, **kw)


def _pick(pair: tuple[list, torch.Tensor], idx: torch.Tensor) -> tuple[list, torch.Tensor]:
    """The (files, labels) entries at `idx`."""
    return [pair[0][i] for i in idx.tolist()], pair[1].index_select(0, idx)


def _folder_splits(pool: dict, fractions, seed: int) -> list[tuple[list, torch.Tensor]]:
    """Train/val/test (files, labels) from the split folders present: val/ and test/ are used as given;
    a missing one is carved stratified from train/ in the fractions' ratio; with neither, train/ (or the
    flat root) is split by the fractions."""
    train = pool["train"]
    if "val" in pool and "test" in pool:
        return [train, pool["val"], pool["test"]]
    if "test" in pool:
        tr, va = _carve(train[1], fractions[0], fractions[1], seed)
        return [_pick(train, tr), _pick(train, va), pool["test"]]
    if "val" in pool:
        tr, te = _carve(train[1], fractions[0], fractions[2], seed)
        return [_pick(train, tr), pool["val"], _pick(train, te)]
    return [_pick(train, i) for i in stratified_split(train[1], fractions, seed)]


def load_image_folder(root: Path, *, seed=0, fractions=(0.6, 0.2, 0.2), limit=None, channels=None,
                      size=None, resize="shorter-crop", classes=None, memmap_bytes=None) -> Dataset:
    """Decode an image folder once, in split order, so each split is a contiguous slice (a view, also
    when the decoded array is a memory-mapped cache file). `classes` (a saved run's list) fixes the
    labels; otherwise they are the training split's sorted class folders."""
    from .download import cache_home
    from .folder import SPLIT_DIRS, decode_files, pick_size, probe, scan_split

    counts: Counter = Counter()
    has_splits = (root / "train").is_dir()
    classes, files, labels = scan_split(root / "train" if has_splits else root, classes, counts)
    parts = {"train": (files, labels)}
    for s in SPLIT_DIRS[1:]:
        if has_splits and (root / s).is_dir():
            parts[s] = scan_split(root / s, classes, counts)[1:]
    pool = {k: (f, torch.tensor(y, dtype=torch.long)) for k, (f, y) in parts.items()}
    if limit:
        pool = {k: _pick(v, _limit(v[1], limit, seed)) for k, v in pool.items()}
    order = _folder_splits(pool, fractions, seed)
    all_files = [f for fs, _ in order for f in fs]
    if not all_files:
        raise DataError(f"{root}: no images found")
    grey, sizes = probe(all_files)
    channels = channels or (1 if grey else 3)
    target = pick_size(sizes, size)
    array, dec = decode_files(all_files, channels, target, resize, cache_home() / "decoded", memmap_bytes)
    images = torch.from_numpy(array)
    cuts = np.cumsum([0] + [len(fs) for fs, _ in order])
    splits = [Split(images[cuts[i]:cuts[i + 1]], order[i][1]) for i in range(3)]
    info = {"source": "folder", "paths": [str(root)], "skipped": dict(counts), "resize": resize,
            "native_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)},
            "image_shape": list(splits[0].image_shape), "channels": channels, **dec,
            "sizes": {k: len(s) for k, s in zip(("train", "val", "test"), splits)},
            "class_to_idx": {c: i for i, c in enumerate(classes)}}
    return Dataset(root.name, list(classes), *splits, info=info)


def load_dataset(name: str, *, image_size=None, channels: int | None = None, seed: int = 0,
                 fractions=(0.6, 0.2, 0.2), data_dir=None, offline: bool = False,
                 limit_per_class: int | None = None, resize: str = "shorter-crop", **kwargs) -> Dataset:
    """Load a dataset by name (see SOURCES) or path (image folder or .npz).

    Extra keyword arguments: `mirrors` / `checksums` (override download URLs / {file: md5|sha256}),
    `classes` (the class list a training run saved: it fixes an image folder's labels and names an
    unnamed .npz's classes; for any other source a different list is a DataError), `memmap_bytes`
    (decoded size above which an image folder is memory-mapped from the cache instead of held in RAM).
    """
    from .folder import RESIZE_POLICIES

    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"unknown resize policy {resize!r}; known: {', '.join(RESIZE_POLICIES)}")
    size = _size(image_size)
    common = dict(seed=seed, fractions=fractions, limit=limit_per_class, channels=channels)
    unknown = set(kwargs) - {"mirrors", "checksums", "classes", "memmap_bytes"}
    if unknown:
        raise ConfigError(f"unknown load_dataset option(s): {', '.join(sorted(unknown))}")
    net = {k: kwargs[k] for k in ("mirrors", "checksums") if k in kwargs}
    saved = kwargs.get("classes")
    named = None
    if name == "digits":
        named = load_digits(size or 32, **common)
    elif name in ("mnist", "fashion-mnist", "kmnist"):
        named = load_idx_source(name, data_dir=data_dir, offline=offline, size=size, resize=resize, **net,
                                **common)
    elif name == "usps":
        named = load_usps_source(data_dir=data_dir, offline=offline, size=size, resize=resize, **net, **common)
    elif name in ("cifar10", "cifar100"):
        named = load_cifar_source(name, data_dir=data_dir, offline=offline, size=size, resize=resize, **net,
                                  **common)
    if named is not None:
        _check_classes(name, named.classes, saved)
        return named
    path = Path(name).expanduser()
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path, size=size, resize=resize, classes=saved, **common)
    if path.is_dir():
        return load_image_folder(path, size=size, resize=resize, classes=saved,
                                 memmap_bytes=kwargs.get("memmap_bytes"), **common)
    if path.suffix == ".npz" or "/" in name or path.exists():
        raise DataError(f"{name}: no such folder or .npz file")
    raise ConfigError(f"unknown data {name!r}; known: {', '.join(SOURCES)} or a path")
