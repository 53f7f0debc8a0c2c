"""`evaluate_run`: how good a trained run is and where it fails — top-1/top-5, loss, per-class scores
ranked into the easiest and hardest classes (as the lectures' ImageNet analysis), the confusion matrix,
the most confidently wrong images, calibration — with optional test-time augmentation and ensembles.

`EvalReport.to_dict()` (schema_version 1) is what `cnnlab eval --format json` prints and the run report
page embeds; `render_report` is the terminal table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..runs import Run

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 1
FILE_NAMES = {"confusion_csv": "confusion.csv", "confusion_png": "confusion.png",
              "wrong_png": "confident_wrong.png", "reliability_png": "reliability.png",
              "report_json": "report.json"}


@dataclass
class EvalReport:
    """One evaluation of a run (or an ensemble) on one set of images."""

    top1: float
    top5: float | None
    loss: float
    count: int
    classes: list[str]
    per_class: list[dict]           # {"class", "accuracy", "precision", "recall", "f1", "support"}, class order
    easiest: list[dict]
    hardest: list[dict]
    confusion: "np.ndarray"         # rows = true class, columns = predicted class
    confident_wrong: list[dict]     # {"index", "true", "pred", "prob"}, most confident first
    ece: float
    members: list[dict]             # ensembles: {"name", "top1"} per member ([] otherwise)
    notes: list[str]
    files: dict[str, Path]
    run: str = ""
    model: str = ""
    source: str = ""                # what was evaluated, e.g. "digits, test split"
    split: str = "test"
    weights: str = "final"
    tta: str | None = None
    top5_k: int = 5                 # top-k actually measured for `top5` (capped at the class count)
    reliability: list[dict] = field(default_factory=list)  # {"lo", "hi", "count", "accuracy", "confidence"}
    # the images of confident_wrong, uint8 (N, C, H, W) in the same order (not part of to_dict)
    wrong_images: "np.ndarray | None" = field(default=None, repr=False, compare=False)

    def figure_png(self, kind: str) -> bytes:
        """One of the evaluation's figures drawn in memory as PNG bytes: "confusion" (the confusion matrix)
        or "reliability" (the reliability diagram), titled as `write_files` titles them."""
        from .plots import confusion_figure, png_bytes, reliability_figure

        title = _title(self)
        if kind == "confusion":
            return png_bytes(confusion_figure(self.confusion, self.classes, f"confusion matrix: {title}"))
        if kind == "reliability":
            return png_bytes(reliability_figure(self.reliability, self.ece, f"reliability: {title}"))
        raise ValueError(f"figure_png: unknown kind {kind!r} (expected confusion or reliability)")

    def to_dict(self) -> dict:
        """A JSON-ready dict (schema_version 1)."""
        return {"schema_version": SCHEMA_VERSION, "run": self.run, "model": self.model, "source": self.source,
                "split": self.split, "weights": self.weights, "tta": self.tta, "count": self.count,
                "top1": self.top1, "top1_error": 1 - self.top1, "top5": self.top5, "top5_k": self.top5_k,
                "top5_error": None if self.top5 is None else 1 - self.top5, "loss": self.loss, "ece": self.ece,
                "classes": list(self.classes), "per_class": self.per_class, "easiest": self.easiest,
                "hardest": self.hardest, "confusion": [[int(v) for v in row] for row in self.confusion],
                "confident_wrong": self.confident_wrong, "reliability": self.reliability,
                "members": self.members, "notes": list(self.notes),
                "files": {k: str(v) for k, v in self.files.items()}}


def evaluate_run(run: Run | str | Path, *, split: str = "test", weights: str = "final", data: str | None = None,
                 tta: str | None = None, ensemble: list[Run | str] | None = None, out_dir: Path | None = None,
                 device: str = "cpu", dataset=None, fuse_bn: bool = False) -> EvalReport:
    """Evaluate `run`'s `weights` (final | best | raw | ema | snapshot:K | snapshots = all snapshots
    averaged) on `split` (train | val | test | all) of its own data or of `data`, with test-time
    augmentation `tta` (flip | 5crop | 10crop | multiscale) and the runs of `ensemble` averaged in.
    Everything the user gave is checked before any model runs. With `out_dir`, the confusion matrix (CSV
    and PNG), the most confidently wrong images, the reliability diagram and report.json are written
    there (atomically). `dataset`: the run's own dataset when the caller has already loaded it (run.dataset()),
    so that it is not read twice. `fuse_bn`: fold each BatchNorm into the conv/linear layer before it first
    (faster; the same predictions up to float rounding)."""
    import torch

    from ..runs import check_writable
    from .data import check_split, is_own_data, load_eval_data
    from .ensemble import load_members, member_specs, open_run, predict_split
    from .metrics import (confident_wrong, easiest_hardest, expected_calibration_error, per_class_table,
                          reliability_bins, topk_accuracy)
    from .tta import check_tta

    run = open_run(run)
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"--device {device!r}: expected cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (this torch build or machine is CPU-only)")
    tta = check_tta(tta)
    split_arg = check_split(split)
    specs = member_specs(run, weights, ensemble)
    if out_dir is not None:
        check_writable(out_dir, "--out")
    # A caller who leaves split at its default on other data gets that data's natural split.
    data_split = None if (not is_own_data(run, data) and split == "test") else split_arg
    evaluation = load_eval_data(run, data, data_split, dataset=dataset)
    if len(evaluation.split) == 0:
        raise ConfigError(f"{evaluation.source}: no images to evaluate")
    members = load_members(specs, device, fuse_bn=fuse_bn)
    batch = run.config.eval_batch_size
    log_probs, member_preds = predict_split(members, evaluation.split, tta=tta, batch_size=batch, device=device)
    labels = evaluation.split.labels
    classes = run.classes
    k = len(classes)
    notes = list(evaluation.notes) + [n for m in members for n in m.notes]
    top5_k = min(5, k)
    if top5_k < 5:
        notes.append(f"top-5 is capped at top-{top5_k}: the run has only {k} classes (so it is 100% by definition)")
    probs = log_probs.exp()
    preds = log_probs.argmax(1)
    rows, cm = per_class_table(labels.numpy(), preds.numpy(), classes)
    easiest, hardest = easiest_hardest(rows)
    bins = reliability_bins(probs, labels)
    wrong = confident_wrong(probs, labels, evaluation.index, classes)
    report = EvalReport(
        top1=float((preds == labels).double().mean()), top5=topk_accuracy(log_probs, labels, top5_k),
        loss=float(-log_probs.gather(1, labels[:, None]).mean()), count=len(labels), classes=list(classes),
        per_class=rows, easiest=easiest, hardest=hardest, confusion=cm,
        confident_wrong=[{k_: v for k_, v in w.items() if k_ != "row"} for w in wrong],
        ece=expected_calibration_error(bins), notes=notes, files={}, run=str(run.path), model=run.config.model,
        source=evaluation.source, split=evaluation.split_name, weights=weights, tta=tta, top5_k=top5_k,
        reliability=bins,
        members=[{"name": m.name, "top1": float((p == labels).double().mean())}
                 for m, p in zip(members, member_preds)] if len(members) > 1 else [],
        wrong_images=evaluation.split.images.index_select(
            0, torch.tensor([w["row"] for w in wrong], dtype=torch.long)).numpy())
    if out_dir is not None:
        report.files = write_files(report, report.wrong_images, Path(out_dir))
    return report


def _title(report: EvalReport) -> str:
    extra = "".join([f", TTA {report.tta}" if report.tta else "",
                     f", ensemble of {len(report.members)}" if report.members else ""])
    return f"{report.model} on {report.source}{extra}"


def write_files(report: EvalReport, wrong_images: "np.ndarray", out_dir: Path) -> dict[str, Path]:
    """confusion.csv, confusion.png, confident_wrong.png, reliability.png and report.json in `out_dir`."""
    import csv
    import io

    from ..utils.io import write_json_atomic, write_text_atomic
    from .plots import confusion_png, reliability_png, wrong_grid_png

    files = {key: out_dir / name for key, name in FILE_NAMES.items()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *report.classes])
    for name, row in zip(report.classes, report.confusion):
        writer.writerow([name, *[int(v) for v in row]])
    write_text_atomic(files["confusion_csv"], buf.getvalue())
    title = _title(report)
    confusion_png(report.confusion, report.classes, files["confusion_png"], f"confusion matrix: {title}")
    wrong_grid_png(wrong_images, report.confident_wrong, files["wrong_png"], f"most confidently wrong: {title}")
    reliability_png(report.reliability, report.ece, files["reliability_png"], f"reliability: {title}")
    report.files = files
    write_json_atomic(files["report_json"], report.to_dict())
    return files


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def render_report(report: EvalReport, fmt: str = "table", max_confusion: int = 20) -> str:
    """The report as a terminal table ("table") or JSON ("json")."""
    import json

    from ..analysis.render import box_table

    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    if fmt != "table":
        raise ConfigError(f"--format {fmt!r}: expected table or json")
    lines = [f"{_title(report)}: {report.count} images, weights {report.weights}", "",
             f"top-1 accuracy {report.top1:.4f}  (error {_pct(1 - report.top1)})",
             f"top-{report.top5_k} accuracy {report.top5:.4f}  (error {_pct(1 - report.top5)})"
             if report.top5 is not None else "top-5: -",
             f"loss {report.loss:.4f} (cross-entropy)",
             f"ECE {report.ece:.4f} (expected calibration error, {len(report.reliability)} bins)", ""]
    if report.members:
        rows = [[m["name"], f"{m['top1']:.4f}"] for m in report.members] + [["ensemble", f"{report.top1:.4f}"]]
        lines.append(box_table("ensemble members", ["member", "top-1"], rows, {"top-1"}))
    rows = [[r["class"], "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}", f"{r['precision']:.3f}",
             f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"])] for r in report.per_class]
    lines.append(box_table("per class", ["class", "accuracy", "precision", "recall", "F1", "images"], rows,
                           {"accuracy", "precision", "recall", "F1", "images"}))

    def ranked(items):
        return ", ".join(f"{r['class']} ({100 * r['accuracy']:.1f}%)" for r in items)

    lines += [f"easiest classes: {ranked(report.easiest)}", f"hardest classes: {ranked(report.hardest)}", ""]
    k = len(report.classes)
    if k <= max_confusion:
        headers = ["true \\ pred", *report.classes]
        rows = [[name, *[str(int(v)) for v in row]] for name, row in zip(report.classes, report.confusion)]
        lines.append(box_table("confusion matrix (rows: true class, columns: predicted)", headers, rows,
                               set(report.classes)))
    else:
        where = report.files.get("confusion_csv", "give out_dir for the CSV")
        lines.append(f"confusion matrix: {k} classes, too wide to print ({where})")
    if report.confident_wrong:
        top = report.confident_wrong[:5]
        lines.append("most confidently wrong: " + "; ".join(
            f"#{w['index']} {w['true']} -> {w['pred']} ({w['prob']:.2f})" for w in top))
    for note in report.notes:
        lines.append(f"note: {note}")
    for key, path in report.files.items():
        lines.append(f"wrote {path}")
    return "\n".join(lines).rstrip("\n") + "\n"
