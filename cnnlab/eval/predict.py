"""`predict_images`: the top-k classes of image files, from a run directory (torch) or from an exported
`.onnx` file (onnxruntime; this path imports no torch). Images get the preprocessing the run was trained
with: decoded to its channels (an RGB image for a grey model is converted with the same luma transform
training used, with a note), resized to its input size by its resize policy (shorter side + centre crop,
or squash; with a note for sizes other than the run's), zero-padded by its pad and normalised with its
mean/std. A folder stands for every image file under it."""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.folder import IMAGE_EXTS, decode_image
from ..errors import CnnlabWarning, ConfigError, DataError

FORMATS = ("table", "json", "csv")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass
class Prediction:
    """The top-k classes of each image, best first, and any conversions made."""

    files: list[Path]
    top: list[list[tuple[str, float]]]      # per file: [(class, probability)], k entries
    classes: list[str]
    source: str
    tta: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"schema_version": 1, "source": self.source, "tta": self.tta, "notes": list(self.notes),
                "predictions": [{"file": str(f), "top": [{"class": c, "prob": p} for c, p in top]}
                                for f, top in zip(self.files, self.top)]}


def list_images(paths: list[str | Path]) -> tuple[list[Path], bool]:
    """(image files, whether any path was a folder): folders expand to their image files (sorted,
    hidden entries skipped). A missing path is a one-line error naming it."""
    files: list[Path] = []
    folder = False
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            folder = True
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"{path}: no image files (.jpg/.jpeg/.png/.bmp/.webp) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    if not files:
        raise ConfigError("no images given")
    return files, folder


def _names(files: list[Path], limit: int = 3) -> str:
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f", … ({len(files)} in all)" if len(files) > limit else "")


def load_images(files: list[Path], pre: dict) -> tuple[np.ndarray, list[str]]:
    """uint8 (N, C, H, W) at the run's input size (after padding) and the notes on conversions made.
    `pre` is the run's preprocessing (Preprocess.to_dict())."""
    from PIL import Image

    channels, pad, resize = int(pre["channels"]), int(pre.get("pad", 0)), pre["resize"]
    h, w = (int(v) - 2 * pad for v in pre["image_size"])
    out = np.zeros((len(files), channels, h + 2 * pad, w + 2 * pad), dtype=np.uint8)
    converted, resized = [], []
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                mode, size = im.mode, im.size
        except Exception as exc:  # PIL raises many types for a file it cannot read
            raise DataError(f"{f}: undecodable image ({type(exc).__name__}: {exc})") from None
        if (mode in _GREY_MODES) != (channels == 1):
            converted.append(f)
        if size != (w, h):
            resized.append(f)
        out[i, :, pad:pad + h, pad:pad + w] = decode_image(f, channels, (h, w), resize)
    notes = []
    if converted:
        n = len(converted)
        kind = f"colour image{'s' * (n != 1)} converted to grey (luma, as training converts them)" if channels == 1 \
            else f"grey image{'s' * (n != 1)} converted to RGB (the grey level copied to each channel)"
        notes.append(f"{n} {kind}: {_names(converted)}")
    if resized:
        how = "shorter side scaled, centre-cropped" if resize == "shorter-crop" else "squashed"
        notes.append(f"{len(resized)} image{'s' * (len(resized) != 1)} not {w}x{h} resized to {w}x{h} ({how}, "
                     f"as in training): {_names(resized)}")
    return out, notes


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """(pixel / 255 - mean) / std per channel, float32 — the same multiply-add the training loader does."""
    c = images.shape[1]
    std = np.asarray(std, dtype=np.float32).reshape(1, c, 1, 1)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-np.asarray(mean, dtype=np.float32).reshape(1, c, 1, 1) / std).astype(np.float32)
    return images.astype(np.float32) * scale + shift


def check_topk(topk: int, num_classes: int, notes: list[str]) -> int:
    if topk < 1:
        raise ConfigError(f"--topk must be a positive integer, got {topk}")
    if topk > num_classes:
        notes.append(f"--topk {topk} capped at the model's {num_classes} classes")
        return num_classes
    return topk


def predict_images(source, images: list[str | Path], *, topk: int = 5, tta: str | None = None,
                   weights: str = "final", device: str = "cpu", batch_size: int = 256) -> Prediction:
    """Top-`topk` classes with probabilities for each image (folders expand to their images). `source` is
    a Run, a run directory, or an exported .onnx file (run in onnxruntime; torch is not imported). Notes
    (conversions, a capped top-k) are in the result and emitted as CnnlabWarning."""
    from .tta import check_tta, num_views

    tta = check_tta(tta)
    files, _ = list_images(images)
    onnx = isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".onnx"
    if onnx:
        session, meta = _onnx_session(Path(source))
        pre, classes, label = meta["preprocess"], list(meta["classes"]), str(source)
    else:
        from ..runs import Run

        run = source if isinstance(source, Run) else Run.open(source)
        run.resolve_weights(weights)
        pre, classes, label = run.preprocess.to_dict(), run.classes, str(run.path)
    notes: list[str] = []
    k = check_topk(topk, len(classes), notes)
    if onnx:  # a graph with dynamic height/width takes the metadata's size: bounded by the machine
        from ..utils.limits import check_memory, short_int

        h, w = pre["image_size"]
        check_memory(len(files) * pre["channels"] * h * w * 5, f"{len(files)} images at {pre['channels']}x"
                     f"{short_int(h)}x{short_int(w)} ({source} metadata)")
    pixels, load_notes = load_images(files, pre)
    notes = load_notes + notes
    per_batch = max(1, batch_size // num_views(tta))
    if onnx:
        probs = _onnx_probs(session, normalise(pixels, pre["mean"], pre["std"]), tta, per_batch)
    else:
        probs = _torch_probs(run.model(weights, device=device), pixels, pre, tta, per_batch, device)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top = [[(classes[j], float(probs[i, j])) for j in row] for i, row in enumerate(order)]
    for note in notes:
        warnings.warn(note, CnnlabWarning, stacklevel=2)
    return Prediction(files, top, list(classes), label, tta, notes)


def _torch_probs(model, pixels: np.ndarray, pre: dict, tta, per_batch: int, device: str) -> np.ndarray:
    import torch

    from .tta import tta_log_proba

    x_all = torch.from_numpy(normalise(pixels, pre["mean"], pre["std"]))
    out = []
    with torch.no_grad():
        for s in range(0, len(x_all), per_batch):
            out.append(tta_log_proba(model, x_all[s:s + per_batch].to(device), tta).exp().cpu())
    return torch.cat(out).numpy()


def _onnx_session(path: Path):
    """An onnxruntime session and the cnnlab metadata (embedded, else the sidecar PATH.json)."""
    import onnxruntime as ort

    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"{path}: not a loadable ONNX model ({first})") from None
    raw = session.get_modelmeta().custom_metadata_map.get("cnnlab")
    sidecar = path.with_name(path.name + ".json")
    try:
        meta = json.loads(raw) if raw else json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no cnnlab metadata (class names, preprocessing) in the file and no sidecar "
                          f"{sidecar.name}; export it with `cnnlab export`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable cnnlab metadata ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or not {"classes", "preprocess"} <= set(meta):
        raise ConfigError(f"{path}: the cnnlab metadata lacks classes/preprocess")
    _check_onnx_meta(path, session, meta)
    return session, meta


def _check_onnx_meta(path: Path, session, meta: dict) -> None:
    """The metadata (embedded, or a sidecar that may belong to another export) must be well-formed and fit
    the graph: its classes the output width, its channels and image size the input. Checked before any image
    is decoded, so that a mismatch is one line naming the file rather than an onnxruntime error, a wrong
    class index or an allocation of the metadata's claimed size."""
    import math

    from ..data.folder import RESIZE_POLICIES

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: the cnnlab metadata {what}; export the run again with `cnnlab export`")

    classes, pre = meta["classes"], meta["preprocess"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' is not a list of class names")
    if not isinstance(pre, dict) or not {"image_size", "channels", "resize", "mean", "std"} <= set(pre):
        raise bad("'preprocess' lacks image_size, channels, resize, mean or std")
    channels, size, pad = pre["channels"], pre["image_size"], pre.get("pad", 0)
    ints = (channels, pad, *(size if isinstance(size, list) else []))
    if not all(type(v) is int for v in ints) or not isinstance(size, list) or len(size) != 2:
        raise bad("has a malformed channels, pad or image_size")
    if channels not in (1, 3) or pad < 0 or min(size) <= 2 * pad or pre["resize"] not in RESIZE_POLICIES:
        raise bad(f"has channels {channels}, image_size {size[0]}x{size[1]}, pad {pad}, resize "
                  f"{str(pre['resize'])[:20]!r} (expected 1 or 3 channels, a size above twice the pad, "
                  f"{' or '.join(RESIZE_POLICIES)})")
    stats = [pre["mean"], pre["std"]]
    if not all(isinstance(s, list) and len(s) == channels and all(type(v) in (int, float) and math.isfinite(v)
                                                                  for v in s) for s in stats) \
            or min(pre["std"]) <= 0:
        raise bad(f"has a mean or std that is not {channels} finite number(s), std above 0")
    want_in = [channels, *size]
    got_in = list(session.get_inputs()[0].shape)[1:]
    got_out = list(session.get_outputs()[0].shape)[-1:]
    # A static graph dimension (an int; cnnlab exports only the batch axis as dynamic) must agree.
    if len(got_in) != 3 or any(isinstance(g, int) and g != w for g, w in zip(got_in, want_in)):
        shown = "x".join(str(g) for g in got_in)
        raise bad(f"says {'x'.join(map(str, want_in))} images but the model's input is {shown} (metadata of "
                  f"another model?)")
    if got_out and isinstance(got_out[0], int) and got_out[0] != len(classes):
        raise bad(f"names {len(classes)} classes but the model has {got_out[0]} outputs (metadata of another "
                  f"model?)")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _onnx_probs(session, x: np.ndarray, tta, per_batch: int) -> np.ndarray:
    """Probabilities from onnxruntime; with TTA the views of a batch go through as one array and their
    probabilities are averaged with the recipe's weights."""
    from .tta import views_numpy

    name = session.get_inputs()[0].name
    out = []
    for s in range(0, len(x), per_batch):
        chunk = x[s:s + per_batch]
        if tta is None:
            out.append(_softmax(session.run(None, {name: chunk})[0].astype(np.float64)))
            continue
        views, weights = views_numpy(chunk, tta)
        flat = views.reshape(-1, *views.shape[2:])
        probs = _softmax(session.run(None, {name: flat})[0].astype(np.float64)).reshape(len(weights), len(chunk), -1)
        out.append(np.tensordot(weights.astype(np.float64), probs, axes=1))
    return np.concatenate(out).astype(np.float64)


def render_prediction(pred: Prediction, fmt: str = "table") -> str:
    """table (one line per image), json, or csv (file, then class/probability pairs best first)."""
    if fmt == "json":
        return json.dumps(pred.to_dict(), indent=2) + "\n"
    k = len(pred.top[0]) if pred.top else 0
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file"] + [f"{col}_{i}" for i in range(1, k + 1) for col in ("class", "prob")])
        for f, top in zip(pred.files, pred.top):
            writer.writerow([str(f)] + [v for c, p in top for v in (c, f"{p:.6f}")])
        return buf.getvalue()
    if fmt != "table":
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    width = max(len(str(f)) for f in pred.files)
    lines = [f"{str(f):<{width}}  " + "  ".join(f"{c} {p:.3f}" for c, p in top)
             for f, top in zip(pred.files, pred.top)]
    return "\n".join(lines) + "\n"
