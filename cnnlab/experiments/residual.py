"""plain-vs-residual: He et al. 2016, Figure 4 — plain networks of 18 and 34 layers against ResNets of the
same depths (the same layers plus identity shortcuts). Without shortcuts the deeper net trains worse (the
degradation problem); with them, depth helps."""

from __future__ import annotations

from .plots import curve, new_figure, save
from .spec import TRAIN_VAL_TEST, Cell, Experiment

# He et al. 2016, Table 2: top-1 error (%, 10-crop testing) on ImageNet validation.
CELLS = (
    Cell("plain18", "plain-18", {"model": "plain18"}, {"residual": False, "depth": 18}, {"val_error": 27.94}),
    Cell("plain34", "plain-34", {"model": "plain34"}, {"residual": False, "depth": 34}, {"val_error": 28.54}),
    Cell("resnet18", "ResNet-18", {"model": "resnet18"}, {"residual": True, "depth": 18}, {"val_error": 27.88}),
    Cell("resnet34", "ResNet-34", {"model": "resnet34"}, {"residual": True, "depth": 34}, {"val_error": 25.03}),
)


def plot(result, path) -> None:
    """Figure 4's layout: left plain, right ResNet; thin lines training error, bold validation error."""
    fig, axes = new_figure(cols=2, size=(10, 4.2))
    for ax, residual, title in ((axes[0], False, "plain"), (axes[1], True, "ResNet")):
        for cell in result.cells:
            if cell.cell.facts["residual"] != residual or not cell.finished_runs:
                continue
            run = cell.finished_runs[0]
            color = "C0" if cell.cell.facts["depth"] == 18 else "C3"
            ax.plot(*curve(run, "train_acc"), color=color, lw=1, ls="--", label=f"{cell.cell.label} train")
            ax.plot(*curve(run, "val_acc"), color=color, lw=2.5, label=f"{cell.cell.label} val")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("plain against residual networks (thin: training error, bold: validation error)", fontsize=10)
    save(fig, path)


def findings(result) -> list[str]:
    out = []
    m = {c.cell.key: (c.mean("train_error"), c.mean("val_error")) for c in result.cells}
    if "plain18" in m and "plain34" in m and None not in (*m["plain18"], *m["plain34"]):
        (t18, v18), (t34, v34) = m["plain18"], m["plain34"]
        out.append(f"plain nets: 34 layers end at {t34:.2f} % training / {v34:.2f} % validation error against "
                   f"{t18:.2f} / {v18:.2f} % for 18 — the deeper plain net trains "
                   + ("worse (the degradation problem)" if t34 > t18 else "no worse here")
                   + " (paper: plain-34 above plain-18 throughout training)")
    if "resnet18" in m and "resnet34" in m and None not in (*m["resnet18"], *m["resnet34"]):
        (t18, v18), (t34, v34) = m["resnet18"], m["resnet34"]
        out.append(f"ResNets: 34 layers {t34:.2f} % / {v34:.2f} % against 18 layers {t18:.2f} / {v18:.2f} % "
                   "(paper: ResNet-34 below ResNet-18)")
    return out


EXPERIMENT = Experiment(
    name="plain-vs-residual",
    title="Plain against residual networks at two depths",
    summary="plain-18/34 against ResNet-18/34: training and validation curves (the ResNet paper's Fig. 4)",
    lecture="\"ResNet (2015)\", Figure 4: training on ImageNet, thin curves training error, bold validation "
            "error; left plain networks of 18 and 34 layers, right ResNets of 18 and 34 layers (the residual "
            "networks have no extra parameter compared to their plain counterparts). The lectures show the "
            "figure; the numbers beside are the paper's Table 2.",
    cells=CELLS,
    columns=TRAIN_VAL_TEST,
    base={"data": "digits", "image_size": 16, "epochs": 15},
    quick={"epochs": 1, "limit_per_class": 10, "batch_size": 16},
    published_header="He et al. 2016 (ImageNet, 10-crop top-1)",
    note="the paper trains for ~60 epochs on ImageNet's 1.2M images at 224x224; here the same four networks "
         "(ImageNet stem, 11-21M parameters) train on the digits at 16x16 — after the stem the maps are 4x4 "
         "and the last stages see 1x1, so depth adds parameters more than spatial context. The paper's "
         "projection shortcuts (option B) are used where shapes change.",
    plot=plot,
    findings=findings,
)
