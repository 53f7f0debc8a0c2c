"""The convolution explainer page: the lectures' examples (and the user's own input) worked out by cnnlab
for every stride and padding the page offers, embedded as JSON; the page's JavaScript only animates,
looks values up and evaluates the output-size formula (W - F + 2P)/S + 1 for the stride/padding set.
"""

from __future__ import annotations

from fractions import Fraction

from ..analysis.conv_demos import DEMOS, ConvDemo, correction_effects, slide_agreement
from ..analysis.conv_explainer import ConvSpec, Volume, fmt, pool, walk
from ..analysis.receptive_field import fits
from ..errors import ConfigError, GeometryError
from .page import render_page

# Most multiply-adds one page embeds (each shown as a formatted product); configurations beyond it are
# listed as not precomputed and the page says which command computes them.
PRODUCT_BUDGET = 300_000
MAX_PADDING_OFFERED = 3


def _strs(vol) -> list:
    """Nested lists of Fractions as the lectures write numbers ("4", "-0.5")."""
    if isinstance(vol, Fraction):
        return fmt(vol)  # type: ignore[return-value]
    return [_strs(v) for v in vol]


def _products(c: int, h: int, w: int, kh: int, kw: int, n: int, stride: int, padding: int) -> int:
    ho, wo = (h - kh + 2 * padding) // stride + 1, (w - kw + 2 * padding) // stride + 1
    return n * ho * wo * c * kh * kw if ho >= 1 and wo >= 1 else 0


def _config(spec: ConvSpec, stride: int, padding: int) -> tuple[dict, Volume]:
    """One stride/padding configuration, every number computed here (exact fractions), and the padded
    input it slides over."""
    wk = walk(spec.input, spec.kernels, spec.biases, stride, padding, spec.mode)
    h, w = len(spec.input[0]), len(spec.input[0][0])
    kh, kw = len(spec.kernels[0][0]), len(spec.kernels[0][0][0])
    fit = {}
    for axis, size, k in (("rows", h, kh), ("cols", w, kw)):
        ok, exact = fits(size, k, stride, padding)
        fit[axis] = {"fits": ok, "exact": round(exact, 4), "floored": int(exact // 1)}
    pooled = None
    if spec.pool:
        try:
            pooled = [_strs(pool(m, spec.pool, spec.pool_size, spec.pool_stride)) for m in wk.maps]
        except GeometryError:
            pooled = None  # the pool window is larger than this configuration's maps
    return {"stride": stride, "padding": padding, "oh": len(wk.maps[0]), "ow": len(wk.maps[0][0]), "fit": fit,
            "maps": _strs(wk.maps), "products": _strs(wk.products), "sums": _strs(wk.channel_sums),
            "pooled": pooled}, wk.padded


def example_data(spec: ConvSpec, key: str, title: str, demo: ConvDemo | None = None,
                 budget: int = PRODUCT_BUDGET) -> dict:
    """The page's data for one example: its values, notes, corrections and every configuration offered
    (strides 1..max(H, W), paddings 0..max(kernel-1, given)), the given one first, until `budget`."""
    x, kernels = spec.input, spec.kernels
    if len({(len(k[0]), len(k[0][0])) for k in kernels}) != 1:
        raise ConfigError("--kernel: the explainer page needs kernels of one size (a filter bank)")
    c, h, w = len(x), len(x[0]), len(x[0][0])
    kh, kw = len(kernels[0][0]), len(kernels[0][0][0])
    max_stride = max(h, w)
    max_padding = max(spec.padding, min(max(kh, kw) - 1, MAX_PADDING_OFFERED))
    given_config = (spec.stride, spec.padding)
    wanted = [given_config] + [(s, p) for p in range(max_padding + 1) for s in range(1, max_stride + 1)
                               if (s, p) != given_config]
    configs, padded, skipped, used = {}, {}, [], 0
    for s, p in wanted:
        cost = _products(c, h, w, kh, kw, len(kernels), s, p)
        if cost == 0:
            continue  # the kernel is larger than the padded input: the page says so from the formula alone
        if used + cost > budget and configs:
            skipped.append(f"{s},{p}")
            continue
        if used + cost > budget:
            raise ConfigError(f"this convolution has {cost:,} multiply-adds, more than a page shows "
                              f"({budget:,}); use `cnnlab conv --steps` or a smaller input")
        used += cost
        configs[f"{s},{p}"], padded_input = _config(spec, s, p)
        padded.setdefault(str(p), _strs(padded_input))
    applied = [k if spec.mode == "correlation" else [[row[::-1] for row in mat[::-1]] for mat in k] for k in kernels]
    given = spec.run().maps
    pool_info = {"kind": spec.pool, "size": spec.pool_size, "stride": spec.pool_stride or spec.pool_size}
    expected = [None if e is None else _strs(e) for e in demo.expected] if demo and demo.expected else None
    data = {
        "key": key, "title": title, "source": demo.source if demo else "your input",
        "notes": list(demo.notes) if demo else [],
        "c": c, "h": h, "w": w, "kh": kh, "kw": kw, "n": len(kernels), "mode": spec.mode,
        "input": _strs(x), "kernels": _strs(kernels), "applied": _strs(applied), "bias": _strs(spec.biases),
        "stride": spec.stride, "padding": spec.padding, "max_stride": max_stride, "max_padding": max_padding,
        "pool": pool_info if spec.pool else None, "expected": expected, "agrees": slide_agreement(spec, given),
        "corrections": [], "configs": configs, "padded": padded, "skipped": skipped,
    }
    if demo is not None:
        for eff in correction_effects(demo):
            cor = eff.correction
            data["corrections"].append({
                "label": cor.label, "kernel": cor.kernel, "channel": cor.channel, "row": cor.row, "col": cor.col,
                "slide": fmt(cor.slide), "corrected": fmt(cor.corrected), "reason": cor.reason,
                "slide_map": _strs(eff.slide_map), "differing": eff.differing, "total": eff.total})
    return data


def _demo_spec(demo: ConvDemo) -> ConvSpec:
    pool_kind, pool_size, pool_stride = demo.pool or (None, 2, None)
    return ConvSpec(demo.input, demo.kernels, demo.biases, demo.stride, demo.padding, demo.mode, pool_kind,
                    pool_size, pool_stride, demo.name)


def conv_page(spec: ConvSpec | None = None) -> str:
    """The page's HTML: every lecture demo, plus `spec` (the user's input, or a demo with options changed)
    shown first. With spec=None or an unchanged demo, that demo opens first."""
    examples, first = [], None
    if spec is not None and spec.demo is not None and spec == _demo_spec(DEMOS[spec.demo]):
        first = spec.demo
    elif spec is not None:
        title = f"{spec.demo} with your options" if spec.demo else "your input"
        base = DEMOS[spec.demo] if spec.demo else None
        same_filters = base is not None and (spec.input, spec.kernels) == (base.input, base.kernels)
        examples.append(example_data(spec, "yours", title, base if same_filters else None))
        first = "yours"
    for name, demo in DEMOS.items():
        examples.append(example_data(_demo_spec(demo), name, demo.title, demo))
    first = first or next(iter(DEMOS))
    return render_page("conv.html.j2", "cnnlab · convolution explainer", {"kind": "conv", "first": first,
                                                                          "examples": examples})
