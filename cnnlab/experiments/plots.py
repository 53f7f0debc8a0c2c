"""Figure helpers for the experiments: matplotlib's object API on the Agg canvas (no pyplot state, no
display), PNG written to the path the runner gives (an atomic temporary file)."""

from __future__ import annotations

from pathlib import Path


def new_figure(cols: int = 1, rows: int = 1, size: tuple[float, float] = (7.0, 4.2)):
    """(figure, list of axes) for a grid of cols × rows panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    return fig, axes


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def data_name(result) -> str:
    """The dataset the runs trained on, short: a name, or a file's name without its folders."""
    data = result.options.get("data") or "digits"
    return Path(data).name if "/" in data else data


def grouped_bars(ax, labels: list[str], series: list[tuple[str, list, list | None]], ylabel: str,
                 published: list | None = None, published_label: str = "lectures") -> None:
    """Bars per label for each (name, means, stds) series; the lectures' figures as black diamonds."""
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, means, stds) in enumerate(series):
        vals = [np.nan if m is None else m for m in means]
        errs = None if stds is None else [0 if s is None else s for s in stds]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=name)
    if published is not None and any(p is not None for p in published):
        ax.scatter([xi for xi, p in zip(x, published) if p is not None], [p for p in published if p is not None],
                   marker="D", color="black", zorder=3, label=published_label)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def curve(run, key: str, scale: float = 100.0, complement: bool = True) -> tuple[list, list]:
    """(epochs, values) of one per-epoch metric of a recorded run (default: error % from an accuracy)."""
    xs = [r["epoch"] for r in run.metrics if key in r]
    ys = [scale * ((1 - r[key]) if complement else r[key]) for r in run.metrics if key in r]
    return xs, ys
