"""`cnnlab compare A B --input CxHxW`: two models side by side, or `--demo depthwise` for the lectures'
standard vs depthwise + pointwise convolution. A standard-vs-separable pair (also given as notation,
"conv3-128" vs "dwconv3 > conv1-128") is detected and shown with the predicted saving 1/D_out + 1/F²."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("compare", help="two models side by side: parameters, FLOPs, receptive field, ratios",
                       description="Compare models A and B (registered names, notation strings or run "
                       "directories) on the same input. With --demo depthwise, A is a standard FxF convolution "
                       "D_in -> D_out and B its depthwise + pointwise replacement (D_in from --input). "
                       "When A's only conv is a standard FxF one and B's are a depthwise FxF + pointwise 1x1 "
                       "pair with the same channels, the conv layers' measured MACs/parameter ratio is shown "
                       "next to the lectures' 1/D_out + 1/F^2.")
    p.add_argument("models", nargs="*", metavar="MODEL", help="A and B (omit with --demo)")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x224x224")
    p.add_argument("--num-classes", type=int, metavar="K",
                   help="classifier width (default: each model's). Notation is analysed as written; with K, "
                   "one that does not end in fc<n> gets Flatten + fc(K) appended")
    p.add_argument("--demo", choices=("depthwise",), help="built-in pair instead of A and B")
    p.add_argument("--out-channels", type=int, default=128, metavar="D_OUT", help="--demo: D_out (default 128)")
    p.add_argument("--kernel", type=int, default=3, metavar="F", help="--demo: filter size F (default 3)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..analysis.compare import compare, depthwise_pair, render_compare
    from ..analysis.resolve import parse_input
    from ..runs import resolve_model_spec as resolve_model
    from ..analysis.summary import summarize
    from ..errors import ConfigError
    from ..layers import meta_device

    size = parse_input(args.input) if args.input else None
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be positive, got {args.num_classes}")
    if args.demo:
        if args.models:
            raise ConfigError("give either two models or --demo, not both")
        if args.out_channels < 1 or args.kernel < 1:
            raise ConfigError("--out-channels and --kernel must be positive")
        size = size or (64, 56, 56)
        f, d_in, d_out = args.kernel, size[0], args.out_channels
        with meta_device():  # shapes and counts only: D_out in the millions allocates nothing
            a_model, b_model = depthwise_pair(d_in, d_out, f)
        a = summarize(a_model, size, name=f"standard conv{f}-{d_out} ({d_in}->{d_out})")
        b = summarize(b_model, size, name=f"depthwise conv{f} + pointwise conv1-{d_out}")
    else:
        if len(args.models) != 2:
            raise ConfigError(f"compare needs exactly two models (or --demo depthwise), got {len(args.models)}")
        summaries = []
        for spec in args.models:
            model, name, model_size = resolve_model(spec, size, args.num_classes)
            size = size or model_size  # B is analysed on A's input so the numbers are comparable
            summaries.append(summarize(model, model_size, name=name))
        a, b = summaries
    print(render_compare(compare(a, b), args.format), end="")
    return 0
