"""Training curves: loss, accuracy and learning rate against epoch, from each run's metrics.jsonl (through
cnnlab.runs), several runs on one figure for comparison (one colour per run; training dashed, validation
solid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .figures import new_figure, save_png


@dataclass
class Curves:
    """One run's per-epoch series (None where an epoch's record lacks the value)."""

    label: str
    epochs: list[int]
    series: dict[str, list[float | None]] = field(default_factory=dict)
    label_smoothing: float = 0.0


SERIES = ("train_loss", "val_loss", "train_acc", "val_acc", "lr")


def run_curves(run, label: str | None = None) -> Curves:
    """The series of an opened run; ConfigError when it has no finished epoch."""
    records = [r for r in run.metrics if isinstance(r.get("epoch"), int)]
    if not records:
        raise ConfigError(f"{run.path}: no epoch finished yet (metrics.jsonl holds no records)")
    series = {k: [_number(r.get(k)) for r in records] for k in SERIES}
    return Curves(label or run.path.name, [r["epoch"] for r in records], series,
                  float(run.config.label_smoothing or 0.0))


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def draw_curves(curves: list[Curves]):
    """Three panels (loss, accuracy, learning rate) with every run; a legend names the runs."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(12.0, 3.9)
    axes = [fig.add_subplot(1, 3, k + 1) for k in range(3)]
    palette = ["#1f5fa8", "#c8590e", "#19763e", "#8e3fae", "#b3202a", "#3f8f8f", "#7a6a1a", "#555555"]
    lr_values = []
    for i, c in enumerate(curves):
        colour = palette[i % len(palette)]
        for ax, key, style in ((axes[0], "train_loss", "--"), (axes[0], "val_loss", "-"),
                               (axes[1], "train_acc", "--"), (axes[1], "val_acc", "-"), (axes[2], "lr", "-")):
            xs = [e for e, v in zip(c.epochs, c.series[key]) if v is not None]
            ys = [v for v in c.series[key] if v is not None]
            if ys:
                ax.plot(xs, ys, style, color=colour, marker="o", markersize=3, linewidth=1.4,
                        label=f"{c.label}: {key.replace('_', ' ')}")
                if key == "lr":
                    lr_values += ys
    epochs = sorted({e for c in curves for e in c.epochs})
    smoothing = sorted({c.label_smoothing for c in curves if c.label_smoothing})
    note = f"\n(training loss includes label smoothing {', '.join(f'{s:g}' for s in smoothing)})" if smoothing else ""
    axes[0].set_title("loss (cross-entropy)" + note, fontsize=9)
    axes[0].set_ylabel("loss", fontsize=8)
    axes[1].set_title("accuracy", fontsize=9)
    axes[1].set_ylabel("fraction correct", fontsize=8)
    axes[2].set_title("learning rate at the end of each epoch", fontsize=9)
    axes[2].set_ylabel("learning rate", fontsize=8)
    positive = [v for v in lr_values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(epochs) <= 10:  # epochs are whole numbers: a tick on each when they are few
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=palette[i % len(palette)], linewidth=2, label=c.label)
               for i, c in enumerate(curves)]
    handles += [Line2D([], [], color="black", linestyle="--", label="training"),
                Line2D([], [], color="black", linestyle="-", label="validation")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_curves(cfg) -> Path:
    """`cnnlab viz curves`: FIRST_RUN/viz/curves.png (or --out) with every run given."""
    from ..runs import Run, viz_path

    cfg.validate()
    runs = [Run.open(p) for p in cfg.runs]
    labels = cfg.labels or _labels(runs)
    curves = [run_curves(run, label) for run, label in zip(runs, labels)]
    out = Path(cfg.out) if cfg.out else viz_path(runs[0].path, "curves")
    return save_png(draw_curves(curves), out)


def _labels(runs) -> list[str]:
    """Run directory names, or their parent/name where two share a name."""
    names = [r.path.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.path.parent.name}/{r.path.name}" for r in runs]
