"""`cnnlab summary MODEL --input CxHxW`: per-layer shapes, parameters, MACs/FLOPs and receptive fields."""

from __future__ import annotations

from ..analysis.render import FORMATS  # light: render imports no torch


def add_parser(sub):
    p = sub.add_parser("summary", help="per-layer shapes, parameters, FLOPs and receptive fields of a model",
                       description="Analyse MODEL (a registered name, a notation string such as "
                       "'conv5-6p0 > tanh > avgpool2 > fc10', or a saved run directory) layer by layer, "
                       "per image, without running real compute.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x224x224 (default: the model's own)")
    p.add_argument("--num-classes", type=int, metavar="K",
                   help="classifier width (default: the model's). A notation MODEL is analysed as written; "
                   "with K, one that does not end in fc<n> gets Flatten + fc(K) appended")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--strict", action="store_true",
                   help="a stride that does not tile its padded input ('does not fit') is an error")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..analysis.resolve import parse_input
    from ..analysis.summary import summarize
    from ..runs import resolve_model_spec
    from ..errors import ConfigError

    size = parse_input(args.input) if args.input else None
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be positive, got {args.num_classes}")
    model, name, size = resolve_model_spec(args.model, size, args.num_classes)
    summary = summarize(model, size, strict=args.strict, name=name)
    print(summary.render(args.format), end="")
    return 0
