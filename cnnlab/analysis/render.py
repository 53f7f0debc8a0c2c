"""Render a Summary as a rich table (for people), JSON (for tools), CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json

FORMATS = ("table", "json", "csv", "markdown")
CSV_COLUMNS = ("name", "type", "kernel", "stride", "padding", "dilation", "groups", "output_shape", "params",
               "trainable", "frozen", "macs", "flops", "rf_size", "rf_jump", "rf_centre", "activation_bytes",
               "fit", "ran")


def human(n: int | float | None, unit: str = "") -> str:
    """1234567 -> '1.23M' (SI prefixes; bytes use powers of 1024)."""
    if n is None:
        return "?"
    base, prefixes = (1024.0, ("", "Ki", "Mi", "Gi", "Ti")) if unit == "B" else (1000.0, ("", "K", "M", "G", "T"))
    v = float(n)
    for p in prefixes:
        if abs(v) < base or p == prefixes[-1]:
            return (f"{int(v)}" if p == "" else f"{v:.3g}{p}") + unit
        v /= base
    return str(n)


def exact(n: int | None) -> str:
    """An exact count with thousands separators (117,600), '?' for an uncounted one: a student checking
    the lectures' arithmetic needs every digit, not 118K."""
    return "?" if n is None else f"{n:,}"


def _pair(v) -> str:
    if v is None:
        return ""
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def _rf(d: dict) -> str:
    if d.get("unknown"):
        return "?"
    if d.get("global"):
        return "global"
    size = "x".join(str(v) for v in d["size"])
    return f"{'<=' if d.get('approx') else ''}{size} j{_pair(d['jump'])} c{_pair(d['centre'])}"


def _window(r) -> str:
    if r.kernel is None:
        return ""
    txt = f"{_pair(r.kernel)}/{_pair(r.stride)}/{_pair(r.padding)}"
    if r.dilation and any(d != 1 for d in r.dilation):
        txt += f" d{_pair(r.dilation)}"
    if r.groups and r.groups != 1:
        txt += f" g{r.groups}"
    return txt


def _cells(r) -> list[str]:
    params = f"{r.params:,}" + (f" ({r.frozen:,} frozen)" if r.frozen else "")
    shape = "x".join(map(str, r.output_shape[1:])) if r.output_shape else "(not run)"
    return [r.name, r.type, _window(r), shape, params, exact(r.macs), exact(r.flops), _rf(r.receptive_field),
            human(r.activation_bytes, "B"), "!" if r.fit else ""]


HEADERS = ["layer", "type", "k/s/p", "output", "params", "MACs", "FLOPs", "receptive field", "act. mem", "fit"]


def _footer_lines(s) -> list[str]:
    t = s.totals
    lines = [f"Total parameters: {t['params']:,} (trainable {t['trainable']:,}, frozen {t['frozen']:,}; "
             f"{human(t['param_bytes'], 'B')})",
             f"Total MACs: {t['macs']:,} ({human(t['macs'])}); FLOPs: {t['flops']:,} ({human(t['flops'])}) per image",
             f"Activation memory (all layer outputs, batch 1): {human(t['activation_bytes'], 'B')}"]
    if t.get("largest_spatial_receptive_field"):
        lines.append(f"Largest receptive field of a spatial map: {_rf(t['largest_spatial_receptive_field'])}"
                     " (size in input pixels, j = jump/effective stride, c = centre of the first unit)")
    top = s.by_type[:4]
    if top:
        lines.append("Parameters by type: " + ", ".join(
            f"{g['type']} {100 * g['params_share']:.1f}%" for g in top if g["params"]))
        by_flops = sorted(s.by_type, key=lambda g: -g["flops"])[:4]
        lines.append("FLOPs by type: " + ", ".join(
            f"{g['type']} {100 * g['flops_share']:.1f}%" for g in by_flops if g["flops"]))
    if s.uncounted:
        lines.append("Uncounted ops (FLOPs unknown, not taken as 0): "
                     + ", ".join(f"{k} x{v}" for k, v in s.uncounted.items()))
    if s.flags:
        lines.append(_geometry_line(s))
    lines += [f"Note: {n}" for n in s.notes]
    lines.append(f"Conventions: {s.conventions}")
    return lines


def _geometry_line(s) -> str:
    """One line for every layer whose stride does not tile its padded input (the fit column's "!"):
    PyTorch floors (W - F + 2P)/S + 1, as standard networks such as ResNet's stride-2 layers expect."""
    unfit = [r for r in s.layers if r.fit]
    first = unfit[0]
    if len(unfit) == 1:
        return (f"Geometry: {first.name} ({first.type}) does not fit: (W - F + 2P)/S + 1 = {first.fit} "
                "(marked ! under fit; --strict makes it an error)")
    return (f"Geometry: {len(unfit)} layers do not fit exactly (marked ! under fit): (W - F + 2P)/S + 1 is "
            f"floored, e.g. {first.name}: {first.fit}; --strict makes this an error")


def box_table(title: str, headers: list[str], rows: list[list[str]], right: set[str]) -> str:
    """A plain box-drawn table. Formatted by hand: rich's Table measures every cell and takes ~0.5 s
    for ResNet-152's 620 rows, more than the whole analysis."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "│ " + " │ ".join(c.rjust(w) if h in right else c.ljust(w)
                                  for c, w, h in zip(cells, widths, headers)) + " │"

    def rule(left: str, mid: str, end: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + end

    top = rule("┏", "┳", "┓").replace("─", "━")
    head = rule("┡", "╇", "┩").replace("─", "━")
    out = [title.center(len(top)).rstrip(), top, line(headers).replace("│", "┃"), head]
    out += [line(r) for r in rows]
    out.append(rule("└", "┴", "┘"))
    return "\n".join(out) + "\n"


def render_table(s) -> str:
    title = f"{s.model} on {'x'.join(map(str, s.input_size))}"
    table = box_table(title, HEADERS, [_cells(r) for r in s.layers], {"params", "MACs", "FLOPs", "act. mem"})
    return table + "\n".join(_footer_lines(s)) + "\n"


def render_markdown(s) -> str:
    lines = [f"### {s.model} on {'x'.join(map(str, s.input_size))}", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in s.layers]
    lines.append("")
    lines += [f"- {line}" for line in _footer_lines(s)]
    return "\n".join(lines) + "\n"


def render_csv(s) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in s.layers:
        rf = r.receptive_field
        w.writerow([r.name, r.type, _pair(r.kernel), _pair(r.stride), _pair(r.padding), _pair(r.dilation),
                    r.groups if r.groups is not None else "", "x".join(map(str, r.output_shape or [])),
                    r.params, r.trainable, r.frozen, "" if r.macs is None else r.macs,
                    "" if r.flops is None else r.flops,
                    "global" if rf.get("global") else _pair(rf.get("size")),
                    _pair(rf.get("jump")), _pair(rf.get("centre")), r.activation_bytes, r.fit or "", r.ran])
    return buf.getvalue()


def render(s, fmt: str = "table") -> str:
    """`s` rendered in one of FORMATS."""
    if fmt == "json":
        return json.dumps(s.to_dict(), indent=2) + "\n"
    if fmt == "csv":
        return render_csv(s)
    if fmt == "markdown":
        return render_markdown(s)
    if fmt == "table":
        return render_table(s)
    from ..errors import ConfigError

    raise ConfigError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
