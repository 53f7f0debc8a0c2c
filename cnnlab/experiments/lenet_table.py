"""lenet-table: the lectures' table "Convolutional LeNet300 – Performance" (MNIST 32x32, test error):
LeNet300 with an output layer only, one and two hidden FC layers, against LeNet-1 and LeNet-5."""

from __future__ import annotations

from .plots import data_name, grouped_bars, new_figure, save
from .spec import Cell, Column, Experiment, params, test_error

CELLS = (
    Cell("lenet300_linear", "LeNet300: FC output layer only (10 U)", {"model": "lenet300_linear"},
         {"kind": "fc"}, {"test_error": 12.0}),
    Cell("lenet300", "LeNet300: 1 hidden FC (300 U) + output", {"model": "lenet300"}, {"kind": "fc"},
         {"test_error": 4.7}),
    Cell("lenet300_100", "LeNet300: 2 hidden FC (300 + 100 U) + output", {"model": "lenet300_100"}, {"kind": "fc"},
         {"test_error": 3.05}),
    Cell("lenet1", "LeNet-1: 2 conv (4 + 12 F) + output", {"model": "lenet1"}, {"kind": "conv"},
         {"test_error": 1.7}),
    Cell("lenet5", "LeNet-5: 2 conv (6 + 16 F) + 3 FC", {"model": "lenet5"}, {"kind": "conv"},
         {"test_error": 0.95}),
)


def plot(result, path) -> None:
    fig, (ax,) = new_figure(size=(7.5, 4.2))
    labels = [c.cell.key for c in result.cells]
    means = [c.mean("test_error") for c in result.cells]
    stds = [(c.values.get("test_error") or {}).get("std") for c in result.cells]
    grouped_bars(ax, labels, [(f"measured ({data_name(result)})", means, stds)],
                 "test error (%)", [c.cell.published.get("test_error") for c in result.cells], "lectures (MNIST)")
    ax.set_title("LeNet300 against convolutional LeNets")
    save(fig, path)


def findings(result) -> list[str]:
    out = []
    try:
        linear = result.cell("lenet300_linear").mean("test_error")
    except KeyError:
        return out
    convs = [(c.cell.key, c.mean("test_error")) for c in result.cells if c.cell.facts.get("kind") == "conv"]
    if linear is not None and convs and all(v is not None for _, v in convs):
        beat = all(v < linear for _, v in convs)
        out.append(f"convolutional LeNets {'beat' if beat else 'do NOT all beat'} the FC output layer alone: "
                   + ", ".join(f"{k} {v:.2f} %" for k, v in convs) + f" against {linear:.2f} % "
                   "(lectures: 1.7 and 0.95 % against 12.0 %)")
    fcs = [(c.cell.key, c.mean("test_error")) for c in result.cells if c.cell.facts.get("kind") == "fc"]
    if len(fcs) == 3 and all(v is not None for _, v in fcs):
        order = fcs[0][1] > fcs[1][1] > fcs[2][1]
        steps = " → ".join(f"{v:.2f} %" for _, v in fcs)
        out.append(f"hidden FC layers {'lower' if order else 'do not lower'} the error step by step: {steps} "
                   "(lectures: 12.0 → 4.7 → 3.05 %)")
    return out


EXPERIMENT = Experiment(
    name="lenet-table",
    title="LeNet300 against convolutional LeNets: test error",
    summary="FC LeNet300 variants against LeNet-1 and LeNet-5 (lectures: 12.0, 4.7, 3.05, 1.7, 0.95 % on MNIST)",
    lecture="\"Convolutional LeNet300 – Performance\", experiments on MNIST 32x32: LeNet300 with 1 FC output "
            "layer 12.0 %, 1 hidden FC 4.7 %, 2 hidden FCs 3.05 %, LeNet-1 1.7 %, LeNet-5 0.95 % test error.",
    cells=CELLS,
    columns=(Column("params", "parameters", params, digits=0, spread=False),
             Column("test_error", "test error %", test_error)),
    base={"data": "digits", "epochs": 20},
    quick={"epochs": 3},
    published_header="lectures (MNIST)",
    note="the lectures' numbers are LeCun et al.'s on MNIST (60,000 training images, 28x28 centred in 32x32, "
         "tens of epochs); the default here is scikit-learn's digits (1,078 training and 359 test images of 8x8 "
         "pixels, upsampled to 32x32) with cnnlab's recipe (SGD + Nesterov, one-cycle, label smoothing). The "
         "tiny, blurry images favour fully connected nets more than MNIST does, and with 359 test images one "
         "error is 0.28 %. `--data /path/usps.npz` (16x16 real scans, 2,007 test images) is closer to MNIST.",
    plot=plot,
    findings=findings,
)
