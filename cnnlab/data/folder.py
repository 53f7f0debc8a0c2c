"""Image folders (ImageFolder layout, optional train/val/test sub-folders) and `.npz` archives, decoded
once into uint8 N×C×H×W; a set larger than the memory threshold is decoded into a memory-mapped cache file.

Layout: ROOT/<class>/<image> or ROOT/{train,val,test}/<class>/<image>. Classes are the training split's
visible sub-folders, sorted; hidden entries and non-image files are skipped and counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import CnnlabWarning, DataError
from ..utils.io import atomic_path, remove_stale_temps
from ..utils.limits import check_memory, human_bytes, short_int

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_DIRS = ("train", "val", "test")
RESIZE_POLICIES = ("shorter-crop", "squash")


def available_memory() -> int:
    """Bytes of RAM available now (MemAvailable), or total physical memory where /proc is absent."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memmap_threshold() -> int:
    """Decoded sets above this many bytes go to a memory-mapped file: $CNNLAB_MEMMAP_BYTES if set,
    else half the available RAM."""
    env = os.environ.get("CNNLAB_MEMMAP_BYTES")
    return int(float(env)) if env else available_memory() // 2


def scan_split(root: Path, classes: list[str] | None, counts: Counter) -> tuple[list[str], list[Path], list[int]]:
    """Files and labels of one split folder. With `classes` given (val/test), labels follow that mapping,
    so a class folder missing here shifts nothing; folders of unknown classes are skipped and counted."""
    is_train = classes is None
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    dirs = []
    for e in entries:
        if e.name.startswith("."):
            counts["hidden"] += 1
        elif e.is_dir():
            dirs.append(e)
        else:
            counts["non_image_files" if e.suffix.lower() not in IMAGE_EXTS else "images_outside_class"] += 1
    if classes is None:
        classes = [d.name for d in dirs]
        if not classes:
            raise DataError(f"{root}: no class sub-folders found (expected ROOT/<class>/<image>)")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for d in dirs:
        if d.name not in index:
            counts["unknown_class_dirs"] += 1
            continue
        n_before = len(files)
        for f in sorted(d.rglob("*")):
            rel = f.relative_to(d)
            if any(part.startswith(".") for part in rel.parts):
                counts["hidden"] += 1
            elif f.is_file():
                if f.suffix.lower() in IMAGE_EXTS:
                    files.append(f)
                    labels.append(index[d.name])
                else:
                    counts["non_image_files"] += 1
            elif f.is_symlink() and not f.exists():  # dangling, or a loop (a -> a): nothing to read
                counts["broken_links"] += 1
        if len(files) == n_before and is_train:
            raise DataError(f"{d}: empty class folder (no .jpg/.jpeg/.png/.bmp/.webp images)")
    return classes, files, labels


def probe(files: list[Path]) -> tuple[bool, Counter]:
    """(all grey?, Counter of (w, h) sizes) from image headers only. An image over Pillow's
    decompression-bomb threshold but under its hard limit is decoded, with one note naming the file (above
    the hard limit Pillow refuses it: a DataError)."""
    from PIL import Image

    grey, sizes, notes = True, Counter(), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        for f in files:
            try:
                with Image.open(f) as im:
                    sizes[im.size] += 1
                    if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                        grey = False
            except Exception as exc:  # PIL raises many types for bad files
                raise DataError(f"{f}: undecodable image ({type(exc).__name__}: {exc})") from None
            notes += [f"{f}: {str(w.message).rstrip('.')}; decoded anyway" for w in caught
                      if issubclass(w.category, Image.DecompressionBombWarning)]
            caught.clear()
    for note in notes:  # outside catch_warnings, which would record them too
        warnings.warn(note, CnnlabWarning, stacklevel=2)
    return grey, sizes


@contextlib.contextmanager
def _quiet_bombs():
    """Pillow's DecompressionBombWarning silenced while decoding: probe() already noted the file once."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _eight_bit(im, path: Path):
    """A 16-bit or 32-bit grey image as 8-bit L, its range scaled (0..65535 -> 0..255), never clipped;
    float images must be finite, in 0..1 or 0..255."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{path}: {im.mode} pixel values {arr.min()}..{arr.max()} are outside 16 bits "
                            f"(0..65535)")
        return Image.fromarray(np.rint(arr * (255 / 65535)).astype(np.uint8), "L")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: holds non-finite (NaN or infinite) pixel values")
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        if arr.size and (arr.min() < 0 or arr.max() * scale > 255):
            raise DataError(f"{path}: float pixel values {arr.min():.3g}..{arr.max():.3g} are outside 0..1 "
                            f"and 0..255")
        return Image.fromarray(np.rint(arr * scale).astype(np.uint8), "L")
    return im


def decode_image(path: Path, channels: int, size: tuple[int, int], resize: str) -> np.ndarray:
    """One file → uint8 (C, H, W): converted to L/RGB (alpha composited on black via convert), resized by
    `resize`: "shorter-crop" scales the shorter side to fit then centre-crops; "squash" ignores aspect."""
    from PIL import Image

    h, w = size
    try:
        with _quiet_bombs(), Image.open(path) as im:
            im.draft("RGB" if channels == 3 else "L", (w, h))  # JPEG: decode at reduced scale if possible
            im = _eight_bit(im, path)  # 16-bit PNGs keep their range (Pillow's convert("L") would clip)
            im = im.convert("RGBA" if im.mode in ("P", "PA") and "transparency" in im.info else im.mode)
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (w, h):
                if resize == "squash":
                    im = im.resize((w, h), Image.BILINEAR)
                else:
                    scale = max(w / im.width, h / im.height)
                    nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
                    im = im.resize((nw, nh), Image.BILINEAR)
                    left, top = (nw - w) // 2, (nh - h) // 2
                    im = im.crop((left, top, left + w, top + h))
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: undecodable image ({type(exc).__name__}: {exc})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_files(files: list[Path], channels: int, size: tuple[int, int], resize: str,
                 cache_dir: Path | None, threshold: int | None = None) -> tuple[np.ndarray, dict]:
    """Decode `files` in order into one uint8 (N, C, H, W) array; above the memory threshold into a
    memory-mapped cache file (written atomically via utils.io.atomic_path, reused next time)."""
    shape = (len(files), channels, *size)
    nbytes = int(np.prod(shape, dtype=np.int64))
    threshold = memmap_threshold() if threshold is None else threshold
    info = {"decoded_bytes": nbytes, "memmap": None}
    if nbytes > threshold and cache_dir is not None:
        _check_disk(Path(cache_dir), nbytes, shape)
    else:
        check_memory(nbytes, f"{len(files):,} images decoded at {channels}x{short_int(size[0])}x{short_int(size[1])}")
    if nbytes <= threshold or cache_dir is None:
        out = np.empty(shape, dtype=np.uint8)
        for i, f in enumerate(files):
            out[i] = decode_image(f, channels, size, resize)
        return out, info
    key = hashlib.sha256(repr((shape, resize, [(str(f), f.stat().st_mtime_ns, f.stat().st_size)
                                               for f in files])).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.u8"
    info["memmap"] = str(path)
    if not (path.exists() and path.stat().st_size == nbytes):
        remove_stale_temps(path.parent)  # of decodes killed mid-write (their process is gone)
        with atomic_path(path) as tmp:
            mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            for i, f in enumerate(files):
                mm[i] = decode_image(f, channels, size, resize)
            mm.flush()
            del mm
    # Copy-on-write mapping: pages load lazily and the array is writable for torch.from_numpy.
    return np.memmap(path, dtype=np.uint8, mode="c", shape=shape), info


def _check_disk(cache_dir: Path, nbytes: int, shape: tuple) -> None:
    """ResourceError unless the cache's file system can hold the decoded set (once; reused after)."""
    import shutil

    from ..errors import ResourceError

    probe_dir = cache_dir
    while not probe_dir.exists() and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    free = shutil.disk_usage(probe_dir).free
    if nbytes > free:
        size = "x".join(short_int(v) for v in shape)
        raise ResourceError(f"{cache_dir}: decoding {size} images needs {human_bytes(nbytes)} of disk for the "
                            f"memory-mapped cache, and only {human_bytes(free)} is free; refused before writing")


def pick_size(sizes: Counter, image_size) -> tuple[int, int]:
    """Target (H, W): the asked size, the native one when all images share it, else a square of the
    median shorter side."""
    if image_size is not None:
        return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(sizes) == 1:
        w, h = next(iter(sizes))
        return h, w
    shorter = sorted(s for (w, h), n in sizes.items() for s in [min(w, h)] * n)
    side = shorter[len(shorter) // 2]
    return side, side


def read_npz(path: Path) -> dict:
    """`x` (N,H,W | N,H,W,C | N,C,H,W) and `y` (N,) arrays, optionally `x_test`/`y_test` and `classes`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc})") from None
    for key in ("x", "y"):
        if key not in data:
            raise DataError(f"{path}: missing array {key!r} (found {', '.join(data) or 'none'})")
    out = {"train": None, "test": None}
    for split, xk, yk in (("train", "x", "y"), ("test", "x_test", "y_test")):
        if xk not in data:
            continue
        x, y = data[xk], data.get(yk)
        if y is not None and y.ndim != 1:
            raise DataError(f"{path}: {yk} must be 1-D (one class index per image), got shape {y.shape}")
        if x.ndim == 0 or len(x) == 0:
            raise DataError(f"{path}: {xk} holds no images")
        if y is None or len(y) != len(x):
            raise DataError(f"{path}: {xk} holds {len(x)} images but {yk} holds "
                            f"{'no' if y is None else len(y)} labels")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{path}: {xk} must hold real pixel values (uint8 0..255 or floats), got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{path}: {xk} holds non-finite pixel values (nan or inf)")
        if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: {xk} pixel values must be in 0..255 (or floats in 0..1), got "
                            f"{x.min()}..{x.max()}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.ndim != 4:
            raise DataError(f"{path}: {xk} has shape {x.shape}; expected N×H×W, N×H×W×C or N×C×H×W")
        if x.dtype.kind == "f":
            x = x * 255.0 if x.max(initial=0) <= 1.0 else x
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DataError(f"{path}: {yk} must hold non-negative integer class indices")
        if x.shape[1] not in (1, 3, 4):  # not grey, RGB or RGBA: slicing off channels would be a silent guess
            raise DataError(f"{path}: {xk} has shape {x.shape}, {x.shape[1]} channels; expected 1 (grey), 3 (RGB) "
                            f"or 4 (RGBA, alpha dropped)")
        out[split] = (np.ascontiguousarray(x[:, :3]), y.astype(np.int64))
    if out["test"] is not None and out["test"][0].shape[1:] != out["train"][0].shape[1:]:
        shape = "x".join(map(str, out["train"][0].shape[1:]))
        raise DataError(f"{path}: x_test images are {'x'.join(map(str, out['test'][0].shape[1:]))} (CxHxW) but "
                        f"x's are {shape}: both splits must have one image size")
    out["classes"] = [str(c) for c in data["classes"]] if "classes" in data else None
    return out
