"""Two models side by side (parameters, MACs, FLOPs, receptive field, B/A ratios), and the lectures'
depthwise-separable replacement of a standard convolution with its predicted saving 1/D_out + 1/F²."""

from __future__ import annotations

import json
from fractions import Fraction

from torch import nn

from .render import human
from .summary import Summary


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


def compare(a: Summary, b: Summary) -> dict:
    """The comparison document: per-quantity values of A and B and the ratio B/A."""
    rows = {}
    for key in ("params", "trainable", "macs", "flops", "activation_bytes"):
        rows[key] = {"a": a.totals[key], "b": b.totals[key], "ratio": _ratio(b.totals[key], a.totals[key])}
    rfa, rfb = (s.totals["largest_spatial_receptive_field"] for s in (a, b))
    rows["receptive_field"] = {"a": rfa, "b": rfb, "ratio": _ratio(rfb["size"][0], rfa["size"][0])
                               if rfa and rfb else None}
    return {"a": a.model, "b": b.model, "input_size": list(a.input_size), "rows": rows,
            "uncounted": {"a": a.uncounted, "b": b.uncounted}}


def render_compare(doc: dict, fmt: str = "table", expected: Fraction | None = None,
                   expected_label: str = "") -> str:
    """Render `compare()`'s document as a rich table or JSON; `expected` is a predicted B/A FLOPs ratio."""
    if expected is not None:
        doc = {**doc, "predicted_flops_ratio": float(expected), "predicted_formula": expected_label}
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"A = {doc['a']}   vs   B = {doc['b']}   on {'x'.join(map(str, doc['input_size']))}")
    for h in ("", "A", "B", "B / A"):
        table.add_column(h, justify="left" if not h else "right")
    for key, row in doc["rows"].items():
        if key == "receptive_field":
            cells = [("x".join(map(str, r["size"])) if r else "global") for r in (row["a"], row["b"])]
        elif key == "activation_bytes":
            cells = [human(row["a"], "B"), human(row["b"], "B")]
        else:
            cells = [f"{row['a']:,}", f"{row['b']:,}"]
        table.add_row(key, *cells, "?" if row["ratio"] is None else f"{row['ratio']:.4f}")
    buf = StringIO()
    Console(file=buf, width=120, no_color=True).print(table)
    out = buf.getvalue()
    if expected is not None:
        out += (f"Measured FLOPs ratio B/A = {doc['rows']['flops']['ratio']:.4f}; lectures' prediction "
                f"{expected_label} = {float(expected):.4f}\n")
    for side in ("a", "b"):
        if doc["uncounted"][side]:
            out += f"Uncounted ops in {doc[side]}: {doc['uncounted'][side]}\n"
    return out
