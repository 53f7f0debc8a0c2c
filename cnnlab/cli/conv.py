"""`cnnlab conv`: the lectures' convolution hand exercises, computed exactly and shown step by step."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("conv", help="compute a small convolution by hand: feature maps, steps, pooling",
                       description="Slide one or more kernels over an input. Matrices are written inline with "
                       "rows separated by ';' and channels by '|' (e.g. \"1 0 1; 0 1 0; 1 0 1\"), or given as "
                       ".txt/.npy/.json files. Fractions like -1/2 are exact.")
    p.add_argument("--input", required=True, metavar="MATRIX", help="input (channels by '|') or a file")
    p.add_argument("--kernel", required=True, action="append", metavar="MATRIX",
                   help="one kernel with as many channels as the input; repeat for a filter bank")
    p.add_argument("--bias", nargs="+", metavar="B", help="one bias per kernel (default 0)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", type=int, default=0, help="zero padding on every side")
    p.add_argument("--mode", choices=("correlation", "convolution"), default="correlation",
                   help="cross-correlation (what conv layers compute, default) or true convolution "
                   "(kernel flipped)")
    p.add_argument("--steps", action="store_true", help="print the multiply-adds of every output unit")
    p.add_argument("--pool", choices=("max", "avg"), help="pool each output map")
    p.add_argument("--pool-size", type=int, default=2)
    p.add_argument("--pool-stride", type=int, help="default: the pool size")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..analysis.conv_explainer import parse_number, convolve, format_matrix, load_volume, pool

    x = load_volume(args.input, "input")
    kernels = [load_volume(k, f"kernel {i + 1}") for i, k in enumerate(args.kernel)]
    biases = [parse_number(b) for b in args.bias] if args.bias else None
    res = convolve(x, kernels, biases, args.stride, args.padding, args.mode)
    c, h, w = len(x), len(x[0]), len(x[0][0])
    kh, kw = len(kernels[0][0]), len(kernels[0][0][0])
    print(f"input {c}x{h}x{w}, {len(kernels)} kernel(s) {c}x{kh}x{kw}, stride {args.stride}, padding "
          f"{args.padding}, {args.mode}: output {len(res.maps)}x{len(res.maps[0])}x{len(res.maps[0][0])} "
          f"(parameters ({kh}*{kw}*{c} + 1)*{len(kernels)} = {(kh * kw * c + 1) * len(kernels)})")
    for note in res.fit_notes:
        print(f"note: {note}")
    for n, mat in enumerate(res.maps):
        print(f"\noutput map {n}:\n{format_matrix(mat)}")
        if args.steps:
            for row in res.steps[n]:
                for line in row:
                    print(f"  {line}")
    if args.pool:
        for n, mat in enumerate(res.maps):
            pooled = pool(mat, args.pool, args.pool_size, args.pool_stride)
            print(f"\n{args.pool} pool {args.pool_size} of map {n}:\n{format_matrix(pooled)}")
    return 0
