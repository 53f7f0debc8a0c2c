"""Scores from predicted probabilities: top-k, per-class accuracy/precision/recall/F1 and the confusion
matrix (scikit-learn), the most confidently wrong examples, and calibration — the expected calibration
error and the reliability diagram's bins (Guo et al. 2017, "On Calibration of Modern Neural Networks":
15 equal-width confidence bins, ECE = sum over bins of |B|/n * |accuracy(B) - confidence(B)|)."""

from __future__ import annotations

import numpy as np
import torch

ECE_BINS = 15


def topk_accuracy(log_probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the k most probable classes."""
    if len(labels) == 0:
        return 0.0
    top = log_probs.topk(min(k, log_probs.shape[1]), dim=1).indices
    return float((top == labels[:, None]).any(1).double().mean())


def per_class_table(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> tuple[list[dict], np.ndarray]:
    """(rows {"class", "accuracy", "precision", "recall", "f1", "support"} in class order, confusion matrix
    with rows = true class and columns = predicted class). A class's accuracy is the fraction of its own
    images classified correctly (its recall, as in the ImageNet per-class analysis); None without images."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(classes)))
    cm = confusion_matrix(labels, preds, labels=ids)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    rows = []
    for i, name in enumerate(classes):
        n = int(support[i])
        rows.append({"class": name, "accuracy": float(cm[i, i] / n) if n else None,
                     "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": n})
    return rows, cm


def easiest_hardest(rows: list[dict], n: int | None = None) -> tuple[list[dict], list[dict]]:
    """The classes with images, by accuracy: the `n` best (ties: higher F1 first) and the `n` worst."""
    scored = [r for r in rows if r["support"]]
    n = n if n is not None else min(5, max(1, len(scored) // 2))
    easiest = sorted(scored, key=lambda r: (-r["accuracy"], -r["f1"], r["class"]))[:n]
    hardest = sorted(scored, key=lambda r: (r["accuracy"], r["f1"], r["class"]))[:n]
    return easiest, hardest


def confident_wrong(probs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, classes: list[str],
                    n: int = 16) -> list[dict]:
    """The `n` misclassified images with the highest predicted probability, most confident first:
    {"index" (position in the evaluated split), "true", "pred", "prob", "row" (row in `probs`)}."""
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != labels).flatten()
    order = wrong[torch.argsort(conf[wrong], descending=True, stable=True)][:n]
    return [{"index": int(index[i]), "true": classes[int(labels[i])], "pred": classes[int(pred[i])],
             "prob": float(conf[i]), "row": int(i)} for i in order]


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins (lo, hi]: count, accuracy and mean confidence of the samples in each."""
    conf, pred = probs.max(1)
    hits = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # bucketize with right=False puts c in bin b when edges[b] < c <= edges[b+1]; confidence is never 0
    which = (torch.bucketize(conf.double(), edges[1:-1], right=False)).clamp(0, bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    acc = torch.bincount(which, weights=hits, minlength=bins)
    mean_conf = torch.bincount(which, weights=conf.double(), minlength=bins)
    out = []
    for b in range(bins):
        c = int(count[b])
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": c,
                    "accuracy": float(acc[b] / c) if c else None, "confidence": float(mean_conf[b] / c) if c else None})
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    """sum_b |B_b|/n * |accuracy_b - confidence_b| over the reliability bins."""
    n = sum(b["count"] for b in bins)
    if not n:
        return 0.0
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))
