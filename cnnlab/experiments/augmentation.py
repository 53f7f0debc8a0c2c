"""augmentation: the lectures' "Data Augmentation – LeNet300 over MNIST" table — the same networks trained
with and without random distortions of the training images (a fresh draw every epoch; the training set
size does not change)."""

from __future__ import annotations

from .plots import grouped_bars, new_figure, save
from .spec import Cell, Column, Experiment, test_error

# LeCun et al. 1998's distortions: random planar affine transformations (translation, rotation, scaling,
# shearing), drawn afresh for every image in every epoch.
DISTORTIONS = "rotate:10,translate:0.1,shear:10,stretch:0.1"
NETWORKS = (("lenet300", "LeNet300: 1 hidden FC (300 U)", 4.7, 3.6),
            ("lenet300_100", "LeNet300: 2 hidden FC (300 + 100 U)", 3.05, 2.45),
            ("lenet5", "LeNet-5", None, None))

CELLS = tuple(
    Cell(f"{model}-{kind}", f"{label}{', distorted train set' if kind == 'distorted' else ''}",
         {"model": model, "augment": DISTORTIONS if kind == "distorted" else None},
         {"network": model, "distorted": kind == "distorted"},
         {} if (pub := (distorted if kind == "distorted" else plain)) is None else {"test_error": pub})
    for model, label, plain, distorted in NETWORKS for kind in ("plain", "distorted"))


def _pairs(result):
    by = {(c.cell.facts["network"], c.cell.facts["distorted"]): c for c in result.cells}
    for model, label, plain, distorted in NETWORKS:
        if (model, False) in by and (model, True) in by:
            yield model, label, by[(model, False)], by[(model, True)], plain, distorted


def plot(result, path) -> None:
    fig, (ax,) = new_figure(size=(7.5, 4.2))
    pairs = list(_pairs(result))
    labels = [p[0] for p in pairs]
    series = [("plain", [p[2].mean("test_error") for p in pairs],
               [(p[2].values.get("test_error") or {}).get("std") for p in pairs]),
              ("distorted", [p[3].mean("test_error") for p in pairs],
               [(p[3].values.get("test_error") or {}).get("std") for p in pairs])]
    grouped_bars(ax, labels, series, "test error (%)")
    for i, p in enumerate(pairs):  # the lectures' plain → distorted figures as a pair of markers
        if p[4] is not None:
            ax.scatter([i - 0.2, i + 0.2], [p[4], p[5]], marker="D", color="black", zorder=3,
                       label="lectures (MNIST)" if i == 0 else None)
    ax.legend(fontsize=8)
    ax.set_title("random distortions of the training set")
    save(fig, path)


def findings(result) -> list[str]:
    out = []
    for model, label, plain_c, dist_c, plain, distorted in _pairs(result):
        a, b = plain_c.mean("test_error"), dist_c.mean("test_error")
        if a is None or b is None:
            continue
        lecture = f" (lectures: {plain} → {distorted} %, {distorted - plain:+.2f})" if plain is not None else ""
        out.append(f"{model}: {a:.2f} → {b:.2f} % with distortions ({b - a:+.2f} points){lecture}")
    return out


EXPERIMENT = Experiment(
    name="augmentation",
    title="Random distortions of the training set",
    summary="LeNet300 (and LeNet-5) with and without distorted training images (lectures: 4.7 → 3.6 %)",
    lecture="\"Data Augmentation – LeNet300 over MNIST\": 1 hidden layer 4.7 → 3.6 % (−0.9), 2 hidden layers "
            "3.05 → 2.45 % (−0.6) test error with a distorted train set (random augmentation at each epoch).",
    cells=CELLS,
    columns=(Column("test_error", "test error %", test_error),),
    base={"data": "digits", "epochs": 30},
    quick={"epochs": 2, "limit_per_class": 30},
    quick_cells=("lenet300-plain", "lenet300-distorted"),
    published_header="lectures (MNIST)",
    note=f"distortions here are `--augment {DISTORTIONS}` (one random affine warp per image per epoch); "
         "LeCun et al.'s were similar planar affine maps on MNIST's 60,000 images. On the digits' 1,078 "
         "training images of 8x8 pixels, a one-pixel shift is a large change, and 359 test images make "
         "one error 0.28 %: use --seeds to see whether a difference is larger than the spread.",
    plot=plot,
    findings=findings,
)
