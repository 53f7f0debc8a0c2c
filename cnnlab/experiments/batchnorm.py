"""batchnorm: "allows higher learning rates" — the same small convnet with and without batch norm, trained
at several learning rates (plain SGD with momentum at a constant rate, so nothing but BN tames a high one)."""

from __future__ import annotations

import math

from .plots import new_figure, save
from .spec import Cell, Column, Experiment, last_train_error, test_error

LRS = (0.01, 0.1, 0.5, 2.0)


def network(bn: bool) -> str:
    norm = " > bn" if bn else ""
    return " > ".join(f"conv3-{c}{norm} > relu > maxpool2" for c in (32, 64, 128)) + " > fc10"


CELLS = tuple(Cell(f"{'bn' if bn else 'nobn'}-lr{lr:g}", f"{'with' if bn else 'without'} BN, lr {lr:g}",
                   {"model": network(bn), "lr": lr}, {"bn": bn, "lr": lr})
              for bn in (False, True) for lr in LRS)


def plot(result, path) -> None:
    fig, (ax,) = new_figure(size=(7, 4.2))
    for bn, color in ((False, "C0"), (True, "C3")):
        cells = sorted((c for c in result.cells if c.cell.facts["bn"] == bn), key=lambda c: c.cell.facts["lr"])
        xs = [c.cell.facts["lr"] for c in cells if c.mean("test_error") is not None]
        ys = [c.mean("test_error") for c in cells if c.mean("test_error") is not None]
        ax.plot(xs, ys, marker="o", color=color, label="with BN" if bn else "without BN")
        bad = [c.cell.facts["lr"] for c in cells if c.outcome != "finished"]
        if bad:
            ax.scatter(bad, [90] * len(bad), marker="x", s=80, color=color,
                       label=f"{'with' if bn else 'without'} BN: diverged / failed")
    ax.axhline(90, color="0.7", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (SGD, momentum 0.9, constant)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    ax.set_title("batch norm allows higher learning rates")
    save(fig, path)


def findings(result, ok: float = 10.0) -> list[str]:
    out = []
    for bn in (False, True):
        cells = [c for c in result.cells if c.cell.facts["bn"] == bn]
        good = [c.cell.facts["lr"] for c in cells if (c.mean("test_error") or math.inf) < ok]
        lost = [f"{c.cell.facts['lr']:g} ({c.outcome})" for c in cells if c.outcome != "finished"]
        out.append(f"{'with' if bn else 'without'} BN: highest learning rate below {ok:g} % test error "
                   + (f"{max(good):g}" if good else "none") + (f"; {', '.join(lost)}" if lost else ""))
    return out


EXPERIMENT = Experiment(
    name="batchnorm",
    title="Batch normalisation and the learning rate",
    summary="a small convnet with and without BN at learning rates 0.01-2 (lectures: BN allows higher rates)",
    lecture="\"Batch Normalization\": effect: allowing higher learning rates and reducing the strong dependence "
            "on initialization; \"allows higher learning rates, faster convergence\" (Ioffe & Szegedy 2015).",
    cells=CELLS,
    columns=(Column("train_error", "train error % (last epoch)", last_train_error),
             Column("test_error", "test error %", test_error)),
    base={"data": "digits", "image_size": 16, "epochs": 10, "schedule": "constant", "momentum": 0.9,
          "nesterov": False, "label_smoothing": 0.0},
    quick={"epochs": 2, "limit_per_class": 20},
    quick_cells=("nobn-lr0.01", "nobn-lr2", "bn-lr0.01", "bn-lr2"),
    note="the lectures give no numbers; Ioffe & Szegedy trained Inception on ImageNet with 5× and 30× the "
         "usual rate. Here a 3-conv net on the digits (16x16) with He initialisation; a run whose loss "
         "becomes NaN/inf is reported as diverged (it stops at once and keeps its last good checkpoint).",
    plot=plot,
    findings=findings,
)
