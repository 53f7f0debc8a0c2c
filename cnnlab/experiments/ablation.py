"""ablation: Zeiler & Fergus's table "Understanding the source of ConvNet performance" at laptop scale — a
small AlexNet-shaped network (conv layers 1-5, fully connected layers 6-7, output 8) with layers removed or
resized, error against the change."""

from __future__ import annotations

from .plots import data_name, new_figure, save
from .spec import TRAIN_VAL_TEST, Cell, Experiment


def network(conv=(32, 64, 96, 96, 64), fc=(256, 256), remove=()) -> str:
    """The ablation net in the lectures' notation; `remove` lists layer numbers (1-7) to drop."""
    k = (5, 3, 3, 3, 3)
    tokens = []
    for i, (c, size) in enumerate(zip(conv, k), start=1):
        if i not in remove:
            tokens += [f"conv{size}-{c}", "relu"]
        if i in (1, 2, 5):  # pooling after layers 1, 2 and 5, as in AlexNet (kept when the layer goes)
            tokens.append("maxpool2")
    for i, n in zip((6, 7), fc):
        if i not in remove:
            tokens += [f"fc{n}", "relu", "dropout"]
    return " > ".join(tokens + ["fc10"])


# Zeiler & Fergus 2013, Table 3: their replication of Krizhevsky et al. (ImageNet, top-1 error %, train / val).
# The wider-conv row is from their own model's part of the table (base 33.1 / 38.4).
CELLS = (
    Cell("base", "base: 5 conv + 2 FC (AlexNet-shaped)", {"model": network()}, {"change": 0},
         {"train_error": 35.1, "val_error": 40.5}),
    Cell("no-3-4", "removed layers 3, 4 (conv)", {"model": network(remove=(3, 4))}, {"change": "depth"},
         {"train_error": 41.8, "val_error": 45.4}),
    Cell("no-7", "removed layer 7 (FC)", {"model": network(remove=(7,))}, {"change": "depth"},
         {"train_error": 27.4, "val_error": 40.0}),
    Cell("no-6-7", "removed layers 6, 7 (FC)", {"model": network(remove=(6, 7))}, {"change": "depth"},
         {"train_error": 27.4, "val_error": 44.8}),
    Cell("no-3-4-6-7", "removed layers 3, 4, 6, 7", {"model": network(remove=(3, 4, 6, 7))}, {"change": "depth"},
         {"train_error": 71.1, "val_error": 71.3}),
    Cell("fc-half", "layers 6, 7: half the units", {"model": network(fc=(128, 128))}, {"change": "fc size"},
         {"train_error": 40.3, "val_error": 41.7}),
    Cell("fc-double", "layers 6, 7: twice the units", {"model": network(fc=(512, 512))}, {"change": "fc size"},
         {"train_error": 26.8, "val_error": 40.0}),
    Cell("conv-wide", "layers 3, 4, 5: twice the maps", {"model": network(conv=(32, 64, 192, 192, 128))},
         {"change": "conv size"}, {"train_error": 18.8, "val_error": 37.5}),
)


def plot(result, path) -> None:
    """Change in validation error against the base, measured and Zeiler & Fergus's, per variant."""
    import numpy as np

    fig, (ax,) = new_figure(size=(8, 4.4))
    try:
        base = result.cell("base")
    except KeyError:
        return
    cells = [c for c in result.cells if c.cell.key != "base"]
    x = np.arange(len(cells))
    b = base.mean("val_error")
    measured = [np.nan if c.mean("val_error") is None or b is None else c.mean("val_error") - b for c in cells]
    zf_base = base.cell.published["val_error"]
    zf = [c.cell.published["val_error"] - (38.4 if c.cell.key == "conv-wide" else zf_base) for c in cells]
    ax.bar(x - 0.2, measured, 0.4, label=f"measured ({data_name(result)}, val error)")
    ax.bar(x + 0.2, zf, 0.4, label="Zeiler & Fergus (ImageNet, val top-1)", color="0.6")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([c.cell.key for c in cells], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("change in validation error vs base (points)")
    ax.legend(fontsize=8)
    ax.set_title("ablation: error against change")
    save(fig, path)


def findings(result) -> list[str]:
    out = []
    means = {c.cell.key: c.mean("val_error") for c in result.cells}
    b = means.get("base")
    if b is None:
        return out
    worst = means.get("no-3-4-6-7")
    if worst is not None:
        others = [v for k, v in means.items() if k not in ("base", "no-3-4-6-7") and v is not None]
        out.append(f"depth: removing layers 3, 4, 6 and 7 gives {worst:.2f} % val error against {b:.2f} % for the base"
                   + (" — the worst of all variants" if others and worst >= max(others) else "")
                   + " (Z&F: 71.3 against 40.5 %, \"depth is important\")")
    fc = [means.get(k) for k in ("fc-half", "fc-double")]
    conv = means.get("conv-wide")
    if all(v is not None for v in fc) and conv is not None:
        out.append(f"resizing the FC layers moves val error by {fc[0] - b:+.2f} / {fc[1] - b:+.2f} points (half / "
                   f"double), widening conv layers 3-5 by {conv - b:+.2f} (Z&F: FC size little to no improvement, "
                   f"bigger conv layers a reasonable improvement)")
    return out


EXPERIMENT = Experiment(
    name="ablation",
    title="Ablation: removing and resizing layers (Zeiler & Fergus at laptop scale)",
    summary="remove or resize layers of an AlexNet-shaped net: error against change (Zeiler & Fergus's table)",
    lecture="\"What makes a ConvNet tick? Understanding the source of ConvNet performance\" [Zeiler and Fergus, "
            "2013]: removing layers 3,4 45.4 %, layer 7 40.0 %, layers 6,7 44.8 %, layers 3,4,6,7 71.3 % val top-1 "
            "error against 40.5 %; FC layers 6,7 at 2048 / 8192 units 41.7 / 40.0 % — \"depth is important\", "
            "changing FC sizes little to no improvement, bigger conv layers a reasonable improvement.",
    cells=CELLS,
    columns=TRAIN_VAL_TEST,
    base={"data": "digits", "image_size": 16, "epochs": 15},
    quick={"epochs": 1, "limit_per_class": 20},
    published_header="Zeiler & Fergus (ImageNet, top-1)",
    note="Zeiler & Fergus trained AlexNet (60M parameters) on ImageNet's 1.2M images for 70 epochs and report "
         "top-1 error; here an AlexNet-shaped net of the same layer pattern (5 conv, 2 FC with dropout, "
         "pooling after layers 1, 2, 5) but ~0.3M parameters trains on the digits at 16x16. Errors are "
         "two orders of magnitude apart, so compare the direction and size of each change, not the values. "
         "Their wider-conv row comes from their own model (base 33.1 / 38.4 %).",
    plot=plot,
    findings=findings,
)
