"""`cnnlab compare A B --input CxHxW`: two models side by side, or `--demo depthwise` for the lectures'
standard vs depthwise + pointwise convolution with the predicted saving 1/D_out + 1/F²."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("compare", help="two models side by side: parameters, FLOPs, receptive field, ratios",
                       description="Compare models A and B (registered names, notation strings or run "
                       "directories) on the same input. With --demo depthwise, A is a standard FxF convolution "
                       "D_in -> D_out and B its depthwise + pointwise replacement (D_in from --input).")
    p.add_argument("models", nargs="*", metavar="MODEL", help="A and B (omit with --demo)")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x224x224")
    p.add_argument("--num-classes", type=int, metavar="K")
    p.add_argument("--demo", choices=("depthwise",), help="built-in pair instead of A and B")
    p.add_argument("--out-channels", type=int, default=128, metavar="D_OUT", help="--demo: D_out (default 128)")
    p.add_argument("--kernel", type=int, default=3, metavar="F", help="--demo: filter size F (default 3)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..analysis.compare import compare, depthwise_pair, predicted_depthwise_ratio, render_compare
    from ..analysis.resolve import parse_input, resolve_model
    from ..analysis.summary import summarize
    from ..errors import ConfigError

    size = parse_input(args.input) if args.input else None
    if args.demo:
        if args.models:
            raise ConfigError("give either two models or --demo, not both")
        if size is None:
            size = (64, 56, 56)
        if args.out_channels < 1 or args.kernel < 1:
            raise ConfigError("--out-channels and --kernel must be positive")
        a_model, b_model = depthwise_pair(size[0], args.out_channels, args.kernel)
        f, d_in, d_out = args.kernel, size[0], args.out_channels
        a = summarize(a_model, size, name=f"standard conv{f}-{d_out} ({d_in}->{d_out})")
        b = summarize(b_model, size, name=f"depthwise conv{f} + pointwise conv1-{d_out}")
        expected, label = predicted_depthwise_ratio(d_out, f), f"1/D_out + 1/F^2 = 1/{d_out} + 1/{f * f}"
    else:
        if len(args.models) != 2:
            raise ConfigError(f"compare needs exactly two models (or --demo depthwise), got {len(args.models)}")
        summaries = []
        for spec in args.models:
            model, name, msize = resolve_model(spec, size, args.num_classes)
            size = size or msize  # B is analysed on A's input so the numbers are comparable
            summaries.append(summarize(model, msize, name=name))
        a, b = summaries
        expected, label = None, ""
    print(render_compare(compare(a, b), args.format, expected, label), end="")
    return 0
