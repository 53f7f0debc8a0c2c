"""The report page's evaluation part, drawn from an object with the fields of cnnlab.eval's EvalReport (the viz
package does not import the evaluation package: the caller passes `cnnlab.eval.evaluate_run`, or its result, to
the report builder). It shows the headline scores, the hardest classes (per-class recall, precision and F1 from
scikit-learn, lowest recall first), the confusion matrix (a picture, and the counts as a table up to 20 classes),
the per-class table and the most confidently wrong images as thumbnails with their true and predicted class.

Pictures come from the report itself when it can draw them in memory (`figure_png`), else from the files an
earlier `cnnlab eval` wrote (`files`); the page never writes evaluation files of its own."""

from __future__ import annotations

import io
from pathlib import Path

from .report import picture

MATRIX_TABLE_MAX = 20  # confusion matrices up to this many classes are also shown as a table of counts
THUMB_CSS_PX = 84  # thumbnails are embedded at their own pixel size and shown this wide (CSS pixels)


def _field(obj, name: str, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _number(v, fmt: str = "{:.4f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def _count(v) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:.3g}"


def _class_row(row) -> dict:
    """A per-class entry (dict with class, accuracy, precision, recall, f1, support) as the page's strings."""
    if isinstance(row, str):  # a bare class name
        return {"class": row, "recall": "—", "precision": "—", "f1": "—", "accuracy": "—", "support": "—"}
    out = {"class": str(_field(row, "class", "?"))}
    out.update({k: _number(_field(row, k), "{:.3f}") for k in ("accuracy", "precision", "recall", "f1")})
    out["support"] = _number(_field(row, "support"), "{:,}")
    return out


def thumbnail_png(image) -> bytes:
    """A uint8 (C, H, W) image as a PNG of its own pixels (greyscale images written as equal RGB channels),
    through matplotlib's image writer: nothing resampled, so the page shows exactly what the model saw."""
    import numpy as np
    from matplotlib.image import imsave

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(f"thumbnail_png: expected a uint8 (C, H, W) image, got {arr.dtype} {arr.shape}")
    rgb = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr[:3]
    buf = io.BytesIO()
    imsave(buf, np.ascontiguousarray(rgb.transpose(1, 2, 0)), format="png")
    return buf.getvalue()


def _wrong_items(evaluation, split: str) -> list[dict]:
    """The most confidently wrong images, most confident first, with a thumbnail where the images came along."""
    rows = list(_field(evaluation, "confident_wrong") or [])
    images = _field(evaluation, "wrong_images")
    items = []
    for i, w in enumerate(rows):
        index, true, pred = (str(_field(w, k, "?")) for k in ("index", "true", "pred"))
        prob = _number(_field(w, "prob"), "{:.3f}")
        item = {"index": index, "true": true, "pred": pred, "prob": prob, "picture": None}
        if images is not None and i < len(images):
            item["picture"] = picture(thumbnail_png(images[i]),
                                      f"{split} image {index}: true {true}, predicted {pred} ({prob})")
        items.append(item)
    return items


def _pictures(evaluation) -> list:
    """The confusion matrix (and a reliability diagram an earlier `cnnlab eval` wrote) as embedded PNGs."""
    draw = getattr(evaluation, "figure_png", None)
    files = _field(evaluation, "files") or {}
    files = files if isinstance(files, dict) else {}
    out = []
    for kind, key, alt, caption in (
            ("confusion", "confusion_png", "confusion matrix",
             "Confusion matrix: rows are the true class, columns the predicted one; each cell is coloured by its "
             "share of the row and labelled with its count."),
            (None, "reliability_png", "reliability diagram", "Reliability: confidence against accuracy.")):
        if kind and callable(draw):
            out.append(picture(draw(kind), alt, caption))
        elif files.get(key) is not None and Path(files[key]).is_file():
            out.append(picture(Path(files[key]).read_bytes(), alt, caption))
    return out


def evaluation_section(evaluation) -> dict:
    """The evaluation part from an object with EvalReport's fields (cnnlab.eval.report.evaluate_run): top1,
    top5, top5_k, loss, count, classes, per_class, easiest, hardest, confusion (rows = true class),
    confident_wrong with wrong_images, ece, members, notes, source, split, weights; optionally figure_png(kind)
    or files {"confusion_png", "reliability_png"}."""
    import numpy as np

    classes = [str(c) for c in (_field(evaluation, "classes") or [])]
    k = _field(evaluation, "top5_k", 5)
    headline = [("top-1 accuracy", _number(_field(evaluation, "top1"))),
                (f"top-{k} accuracy", _number(_field(evaluation, "top5"))),
                ("cross-entropy loss", _number(_field(evaluation, "loss"))),
                ("images", _number(_field(evaluation, "count"), "{:,}")),
                ("expected calibration error", _number(_field(evaluation, "ece")))]
    confusion = _field(evaluation, "confusion")
    matrix = None
    if confusion is not None:
        arr = np.asarray(confusion)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] <= MATRIX_TABLE_MAX:
            names = classes if len(classes) == arr.shape[0] else [str(i) for i in range(arr.shape[0])]
            # each cell shaded by its share of the true class's row, as the picture is
            totals = arr.sum(1)
            matrix = {"classes": names, "rows": [
                [{"value": _count(v), "shade": round(float(v) / float(totals[i]), 3) if totals[i] else 0.0,
                  "diag": i == j} for j, v in enumerate(row)] for i, row in enumerate(arr)]}
    members = _field(evaluation, "members")
    split = str(_field(evaluation, "split", "test") or "test")
    source, weights = _field(evaluation, "source"), _field(evaluation, "weights")
    about = f"On {source} ({weights} weights)." if source and weights else ""
    return {"about": about, "headline": headline,
            "per_class": [_class_row(r) for r in _field(evaluation, "per_class") or []],
            "hardest": [_class_row(x) for x in _field(evaluation, "hardest") or []],
            "easiest": [_class_row(x) for x in _field(evaluation, "easiest") or []], "matrix": matrix,
            "wrong": _wrong_items(evaluation, split), "pictures": _pictures(evaluation),
            "thumb_px": THUMB_CSS_PX,
            "members": [str(_field(m, "name", m)) for m in members] if isinstance(members, (list, tuple)) else [],
            "notes": [str(n) for n in _field(evaluation, "notes") or []]}
