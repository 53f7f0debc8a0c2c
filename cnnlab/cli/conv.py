"""`cnnlab conv`: the lectures' convolution hand exercises, computed exactly and shown step by step."""

from __future__ import annotations

import argparse

DEMO_NAMES = ("filter-bank", "x-filter", "cartesian-axes", "stride-7x7")  # cnnlab.analysis.conv_demos.DEMOS


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def add_conv_arguments(p, page: bool = False) -> None:
    """The options shared by `cnnlab conv` and `cnnlab explain conv` (page=True leaves out --steps)."""
    p.add_argument("--input", metavar="MATRIX",
                   help="the input: rows separated by ';', channels by '|' (\"1 0; 0 1 | 2 2; 2 2\"), or a "
                   ".txt/.npy/.json file; required unless --demo gives one")
    p.add_argument("--kernel", action="append", metavar="MATRIX",
                   help="one kernel with as many channels as the input, same syntax; repeat for a filter "
                   "bank (one output map per kernel)")
    p.add_argument("--bias", nargs="+", metavar="B", help="one bias per kernel, e.g. --bias 1 0 (default 0)")
    p.add_argument("--stride", type=_at_least(1), metavar="S",
                   help="step of the kernel in both directions (default 1)")
    p.add_argument("--padding", type=_at_least(0), metavar="P",
                   help="rows/columns of zeros added on every side (default 0)")
    p.add_argument("--mode", choices=("correlation", "convolution"),
                   help="cross-correlation (what conv layers compute, default) or true convolution "
                   "(kernel rotated 180°, the lectures' (k*f)(x, y))")
    if not page:
        p.add_argument("--steps", action="store_true", help="print the multiply-adds of every output unit")
    p.add_argument("--pool", choices=("max", "avg"), help="then pool each output map (max or average)")
    p.add_argument("--pool-size", type=_at_least(1), metavar="K",
                   help="pooling window K x K (default 2)")
    p.add_argument("--pool-stride", type=_at_least(1), metavar="S",
                   help="pooling stride (default: the pool size, non-overlapping windows)")
    p.add_argument("--demo", choices=DEMO_NAMES,
                   help="a lecture example preloaded: the CS231n filter bank, the 5x5 image with the X "
                   "filter, the Cartesian-axes exercise or the 7x7 stride examples; options given override "
                   "its values (e.g. --demo stride-7x7 --stride 3)")


def add_parser(sub):
    p = sub.add_parser("conv", help="compute a small convolution by hand: feature maps, steps, pooling",
                       description="Slide one or more kernels over an input. Matrices are written inline with "
                       "rows separated by ';' and channels by '|' (e.g. \"1 0 1; 0 1 0; 1 0 1\"), or given as "
                       ".txt/.npy/.json files. Fractions like -1/2 are exact. `cnnlab explain conv` draws the "
                       "same computation as an animated page.")
    add_conv_arguments(p)
    p.set_defaults(func=_run)


def spec_from_args(args):
    """The checked ConvSpec of parsed conv options (shared with `cnnlab explain conv`)."""
    from ..analysis.conv_demos import get_demo
    from ..analysis.conv_explainer import conv_spec

    demo = get_demo(args.demo) if args.demo else None
    return conv_spec(args.input, args.kernel, args.bias, args.stride, args.padding, args.mode, args.pool,
                     args.pool_size, args.pool_stride, demo)


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _print_demo(name: str) -> None:
    """The lecture example's provenance, notes, corrections with their reason, and the slide's filters."""
    from ..analysis.conv_demos import correction_effects, get_demo
    from ..analysis.conv_explainer import fmt, format_matrix

    demo = get_demo(name)
    print(f"demo {demo.name}: {demo.title}\nsource: {demo.source}")
    for note in demo.notes:
        print(f"note: {note}")
    for eff in correction_effects(demo):
        c = eff.correction
        print(f"corrected: {c.label} (filter {c.kernel}, channel {c.channel}, row {c.row}, column {c.col}) reads "
              f"{fmt(c.slide)} in the slide's text; cnnlab uses {fmt(c.corrected)}: {c.reason}.")
        print(f"  with the slide's {fmt(c.slide)}, output map {c.kernel} would be\n"
              f"{_indent(format_matrix(eff.slide_map))}\n"
              f"  ({eff.differing} of its {eff.total} values differ from the slide's)")
    if demo.corrections:  # show the slide's values verbatim beside the corrected computation
        print("input as the slide prints it (less its border of zeros):")
        for ch, mat in enumerate(demo.input):
            print(f"  x[:,:,{ch}]\n{_indent(format_matrix(mat))}")
        for n, k in enumerate(demo.slide_kernels()):
            print(f"filter w{n} as the slide's text reads it:")
            for ch, mat in enumerate(k):
                print(f"  w{n}[:,:,{ch}]\n{_indent(format_matrix(mat))}")
    print()


def _run(args) -> int:
    from ..analysis.conv_demos import slide_agreement
    from ..analysis.conv_explainer import format_matrix, pool

    spec = spec_from_args(args)
    if spec.demo:
        _print_demo(spec.demo)
    res = spec.run()
    x, kernels = spec.input, spec.kernels
    c, h, w = len(x), len(x[0]), len(x[0][0])
    kh, kw = len(kernels[0][0]), len(kernels[0][0][0])
    print(f"input {c}x{h}x{w}, {len(kernels)} kernel(s) {c}x{kh}x{kw}, stride {spec.stride}, padding "
          f"{spec.padding}, {spec.mode}: output {len(res.maps)}x{len(res.maps[0])}x{len(res.maps[0][0])} "
          f"(parameters ({kh}*{kw}*{c} + 1)*{len(kernels)} = {(kh * kw * c + 1) * len(kernels)})")
    for note in res.fit_notes:
        print(f"note: {note}")
    for n, (mat, agrees) in enumerate(zip(res.maps, slide_agreement(spec, res.maps))):
        print(f"\noutput map {n}:\n{format_matrix(mat)}")
        if agrees is not None:
            print("= the slide's output map, value for value" if agrees else "!= the slide's output map")
        if getattr(args, "steps", False):
            for row in res.steps[n]:
                for line in row:
                    print(f"  {line}")
    if spec.pool:
        for n, mat in enumerate(res.maps):
            pooled = pool(mat, spec.pool, spec.pool_size, spec.pool_stride)
            print(f"\n{spec.pool} pool {spec.pool_size} of map {n}:\n{format_matrix(pooled)}")
    return 0
