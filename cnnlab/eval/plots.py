"""The evaluation's figures (matplotlib, Agg canvas, written atomically): the confusion matrix as a
labelled heatmap, the most confidently wrong images as a grid, and the reliability diagram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..utils.io import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, drawn in memory (for pages that embed it rather than a file)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_png(cm: np.ndarray, classes: list[str], out: Path, title: str = "") -> Path:
    """confusion_figure written to `out` (atomically)."""
    return _save(confusion_figure(cm, classes, title), out)


def confusion_figure(cm: np.ndarray, classes: list[str], title: str = ""):
    """Rows = true class, columns = predicted; each cell coloured by the share of its row (so rare classes
    read as clearly as common ones) and, up to 30 classes, labelled with its count."""
    k = len(classes)
    side = min(16.0, 2.5 + 0.45 * k)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    totals = cm.sum(1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(k) if k <= 60 else range(0, k, math.ceil(k / 60))
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix", fontsize=10)
    fig.tight_layout()
    return fig


def wrong_grid_png(images: np.ndarray, rows: list[dict], out: Path, title: str = "") -> Path:
    """A grid of uint8 (N, C, H, W) images, each titled "true → predicted (probability)"."""
    n = max(1, len(rows))
    cols = min(4, n)
    lines = math.ceil(n / cols)
    fig = _figure(2.3 * cols, 2.8 * lines + 0.5)
    for i, row in enumerate(rows):
        ax = fig.add_subplot(lines, cols, i + 1)
        img = images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(f"#{row['index']}: true {row['true']}\npred {row['pred']} ({row['prob']:.2f})", fontsize=8)
        ax.axis("off")
    if not rows:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.axis("off")
    fig.suptitle(title or "most confidently wrong", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, out)


def reliability_png(bins: list[dict], ece: float, out: Path, title: str = "") -> Path:
    """reliability_figure written to `out` (atomically)."""
    return _save(reliability_figure(bins, ece, title), out)


def reliability_figure(bins: list[dict], ece: float, title: str = ""):
    """Accuracy per confidence bin against the diagonal of perfect calibration, the gap shaded, with the
    share of samples per bin below."""
    fig = _figure(5.0, 6.0)
    ax = fig.add_axes((0.14, 0.36, 0.8, 0.56))
    hist = fig.add_axes((0.14, 0.08, 0.8, 0.18), sharex=ax)
    width = bins[0]["hi"] - bins[0]["lo"]
    lo = np.array([b["lo"] for b in bins])
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["confidence"] is not None else 0.0 for b in bins])
    has = np.array([b["count"] > 0 for b in bins])
    ax.bar(lo[has], acc[has], width=width, align="edge", color="#4c72b0", edgecolor="black", label="accuracy")
    gap_lo = np.minimum(acc, conf)
    ax.bar(lo[has], np.abs(conf - acc)[has], bottom=gap_lo[has], width=width, align="edge", facecolor="none",
           edgecolor="#c44e52", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title or 'reliability diagram'}\nECE {ece:.4f} ({len(bins)} bins)", fontsize=10)
    ax.tick_params(labelbottom=False)
    total = max(1, sum(b["count"] for b in bins))
    hist.bar(lo, [b["count"] / total for b in bins], width=width, align="edge", color="grey", edgecolor="black")
    hist.set_xlabel("confidence (top-1 probability)")
    hist.set_ylabel("share")
    return fig
