"""depthwise: a standard convnet against its depthwise-separable version (MobileNet's building block), with
parameters, FLOPs, accuracy and time. The lectures: replacing a standard FxF conv D1→D2 by a depthwise FxF
plus a pointwise 1x1 conv costs 1/D2 + 1/F² as much, about 1/8-1/9 for 3x3."""

from __future__ import annotations

from .plots import new_figure, save
from .spec import Cell, Column, Experiment, images_per_second, mflops, params, test_error, train_seconds

WIDTHS = (64, 128, 128, 256)  # the convs after the first; pooling after the 1st and 3rd of these


def network(separable: bool) -> str:
    tokens = ["conv3-32 > bn > relu"]  # the first conv stays standard, as in MobileNet
    for i, c in enumerate(WIDTHS):
        tokens.append(f"dwconv3 > bn > relu > conv1-{c} > bn > relu" if separable else f"conv3-{c} > bn > relu")
        if i in (0, 2):
            tokens.append("maxpool2")
    return " > ".join(tokens + ["gap", "fc10"])


CELLS = (Cell("standard", "standard 3x3 convolutions", {"model": network(False)}, {"separable": False}),
         Cell("separable", "depthwise 3x3 + pointwise 1x1", {"model": network(True)}, {"separable": True}))


def plot(result, path) -> None:
    keys = (("params", "parameters"), ("mflops", "MFLOPs / image"), ("test_error", "test error %"),
            ("train_seconds", "training time (s)"))
    fig, axes = new_figure(cols=4, size=(11, 3.4))
    for ax, (key, title) in zip(axes, keys):
        labels = [c.cell.key for c in result.cells]
        vals = [c.mean(key) or 0 for c in result.cells]
        errs = [(c.values.get(key) or {}).get("std") or 0 for c in result.cells]
        ax.bar(labels, vals, yerr=errs, capsize=3, color=["C0", "C1"][:len(labels)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("standard against depthwise-separable convolutions", fontsize=10)
    save(fig, path)


def findings(result) -> list[str]:
    try:
        std, sep = result.cell("standard"), result.cell("separable")
    except KeyError:
        return []
    out = []
    predicted = [1 / d + 1 / 9 for d in WIDTHS]
    if std.mean("mflops") and sep.mean("mflops") is not None:
        out.append(f"FLOPs: {sep.mean('mflops'):.2f}M against {std.mean('mflops'):.2f}M per image, "
                   f"ratio {sep.mean('mflops') / std.mean('mflops'):.3f} for the whole network; the lectures' "
                   f"per-layer 1/D2 + 1/F² gives {min(predicted):.3f}-{max(predicted):.3f} for these layers "
                   "(the first conv and the classifier are unchanged)")
    if std.mean("params") and sep.mean("params") is not None:
        out.append(f"parameters: {sep.mean('params'):,.0f} against {std.mean('params'):,.0f} "
                   f"(ratio {sep.mean('params') / std.mean('params'):.3f})")
    if std.mean("test_error") is not None and sep.mean("test_error") is not None:
        out.append(f"test error: {sep.mean('test_error'):.2f} % against {std.mean('test_error'):.2f} % "
                   "(lectures: \"at only a small reduction in accuracy\")")
    if std.mean("train_seconds") and sep.mean("train_seconds") is not None:
        out.append(f"training time: {sep.mean('train_seconds'):.1f} s against {std.mean('train_seconds'):.1f} s "
                   f"(ratio {sep.mean('train_seconds') / std.mean('train_seconds'):.2f}); depthwise convs do "
                   "little arithmetic per byte moved, so time falls less than FLOPs on a CPU")
    return out


EXPERIMENT = Experiment(
    name="depthwise",
    title="Standard against depthwise-separable convolutions",
    summary="a convnet and its depthwise-separable version: parameters, FLOPs, accuracy, time (lectures: ~1/8-1/9)",
    lecture="\"Depthwise convolution + Pointwise convolution\": Reduction = 1/D2 + 1/F², roughly 1/8-1/9 for 3x3 "
            "depthwise separable convolutions, \"at only a small reduction in accuracy\"; used in MobileNet.",
    cells=CELLS,
    columns=(Column("params", "parameters", params, digits=0, spread=False),
             Column("mflops", "MFLOPs / image", mflops, digits=3, spread=False),
             Column("test_error", "test error %", test_error),
             Column("train_seconds", "training s", train_seconds, digits=1),
             Column("images_per_s", "images/s (training)", images_per_second, digits=0)),
    base={"data": "digits", "image_size": 16, "epochs": 15},
    quick={"epochs": 1, "limit_per_class": 20},
    note="the lectures' ratio is per layer and counts FLOPs only; a whole network keeps its first conv and "
         "classifier, and on a CPU the time depends on memory traffic as much as on FLOPs. FLOPs are cnnlab's "
         "count (a multiply-add is 2) recorded in the runs index when each run started; times are training "
         "seconds from result.json on a shared 2-core machine.",
    plot=plot,
    findings=findings,
)
