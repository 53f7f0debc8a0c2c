"""Two models side by side (parameters, MACs, FLOPs, receptive field, B/A ratios), and the lectures'
depthwise-separable replacement of a standard convolution with its predicted saving 1/D_out + 1/F²."""

from __future__ import annotations

import json
from fractions import Fraction

from torch import nn

from .render import box_table, human
from .summary import LayerRow, Summary


def depthwise_pair(d_in: int, d_out: int, kernel: int = 3) -> tuple[nn.Module, nn.Module]:
    """(standard F x F conv D_in -> D_out, depthwise F x F conv + pointwise 1 x 1 conv), both
    "same"-padded and bias-free so that the measured FLOPs ratio is exactly the lectures' formula."""
    pad = kernel // 2
    standard = nn.Sequential(nn.Conv2d(d_in, d_out, kernel, padding=pad, bias=False))
    separable = nn.Sequential(
        nn.Conv2d(d_in, d_in, kernel, padding=pad, groups=d_in, bias=False),  # depthwise: one filter per channel
        nn.Conv2d(d_in, d_out, 1, bias=False))                                # pointwise: mixes channels
    return standard, separable


def predicted_depthwise_ratio(d_out: int, kernel: int) -> Fraction:
    """The lectures' reduction (depthwise + pointwise cost) / standard cost = 1/D_out + 1/F²."""
    return Fraction(1, d_out) + Fraction(1, kernel * kernel)


def _ratio(b, a) -> float | None:
    return None if a in (None, 0) or b is None else b / a


def _convs(s: Summary) -> list[LayerRow]:
    """The 2-D convolutions that ran, as modules or as F.conv2d calls, in execution order."""
    return [r for r in s.layers if r.ran and r.type in ("Conv2d", "conv2d") and r.kernel is not None]


def _channels(r: LayerRow) -> tuple[int, int]:
    """(input channels, output channels) of a conv row."""
    return r.input_shape[1], r.output_shape[1]


def separable_pair(a: Summary, b: Summary) -> dict | None:
    """When A's only convolution is a standard F x F one (D_in -> D_out) and B's are a depthwise F x F
    one on D_in channels followed by a pointwise 1 x 1 D_in -> D_out (in that order, any layers between,
    any layers such as a classifier around them): the conv layers' MACs and parameters side by side, their
    measured ratio B/A and the lectures' prediction 1/D_out + 1/F² for MACs (exact when both use the same
    stride and padding; parameters differ from it by the biases). Else None."""
    convs_a, convs_b = _convs(a), _convs(b)
    if len(convs_a) != 1 or len(convs_b) != 2:
        return None
    (std,), (dw, pw) = convs_a, convs_b
    d_in, d_out = _channels(std)
    f = std.kernel
    if (std.groups != 1 or f[0] != f[1] or f[0] < 2 or _channels(dw) != (d_in, d_in) or dw.groups != d_in
            or dw.kernel != f or _channels(pw) != (d_in, d_out) or pw.kernel != [1, 1] or pw.groups != 1):
        return None
    rows = {key: {"a": getattr(std, key), "b": getattr(dw, key) + getattr(pw, key),
                  "ratio": _ratio(getattr(dw, key) + getattr(pw, key), getattr(std, key))}
            for key in ("macs", "params")}
    predicted = predicted_depthwise_ratio(d_out, f[0])
    return {"d_in": d_in, "d_out": d_out, "kernel": f[0], "layers": {"a": [std.name], "b": [dw.name, pw.name]},
            "conv_macs": rows["macs"], "conv_params": rows["params"],
            "predicted_ratio": float(predicted), "predicted_fraction": str(predicted),
            "formula": f"1/D_out + 1/F^2 = 1/{d_out} + 1/{f[0] * f[0]}"}


def compare(a: Summary, b: Summary) -> dict:
    """The comparison document: per-quantity totals of A and B with the ratio B/A, and `separable` (see
    separable_pair; null when the two are not a standard vs depthwise-separable pair)."""
    rows = {}
    for key in ("params", "trainable", "macs", "flops", "activation_bytes"):
        rows[key] = {"a": a.totals[key], "b": b.totals[key], "ratio": _ratio(b.totals[key], a.totals[key])}
    rfa, rfb = (s.totals["largest_spatial_receptive_field"] for s in (a, b))
    rows["receptive_field"] = {"a": rfa, "b": rfb, "ratio": _ratio(rfb["size"][0], rfa["size"][0])
                               if rfa and rfb else None}
    return {"a": a.model, "b": b.model, "input_size": list(a.input_size), "rows": rows,
            "separable": separable_pair(a, b), "uncounted": {"a": a.uncounted, "b": b.uncounted}}


def _separable_lines(sep: dict) -> str:
    """The measured conv MACs/params ratios of a separable pair next to the lectures' formula."""
    macs, params = sep["conv_macs"], sep["conv_params"]
    f = sep["kernel"]
    exact = Fraction(params["b"], params["a"]) == Fraction(sep["predicted_fraction"])
    dw, pw = sep["layers"]["b"]
    return (f"Depthwise-separable pair: A's {sep['layers']['a'][0]} (standard {f}x{f} conv, {sep['d_in']} -> "
            f"{sep['d_out']}) vs B's {dw} (depthwise {f}x{f}) + {pw} (pointwise 1x1)\n"
            f"  conv MACs   B/A = {macs['b']:,} / {macs['a']:,} = {macs['ratio']:.4f}   "
            f"lectures' {sep['formula']} = {sep['predicted_ratio']:.4f}\n"
            f"  conv params B/A = {params['b']:,} / {params['a']:,} = {params['ratio']:.4f}"
            f"{'' if exact else '   (the biases make it differ)'}\n")


def render_compare(doc: dict, fmt: str = "table") -> str:
    """Render `compare()`'s document as a table or JSON."""
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    rows = []
    for key, row in doc["rows"].items():
        if key == "receptive_field":
            cells = [("x".join(map(str, r["size"])) if r else "global") for r in (row["a"], row["b"])]
        elif key == "activation_bytes":
            cells = [human(row["a"], "B"), human(row["b"], "B")]
        else:
            cells = [f"{row['a']:,}", f"{row['b']:,}"]
        rows.append([key, *cells, "?" if row["ratio"] is None else f"{row['ratio']:.4f}"])
    title = f"A = {doc['a']}   vs   B = {doc['b']}   on {'x'.join(map(str, doc['input_size']))}"
    out = box_table(title, ["", "A", "B", "B / A"], rows, {"A", "B", "B / A"})
    if doc["separable"]:
        out += _separable_lines(doc["separable"])
    for side in ("a", "b"):
        if doc["uncounted"][side]:
            out += f"Uncounted ops in {doc[side]}: {doc['uncounted'][side]}\n"
    return out
