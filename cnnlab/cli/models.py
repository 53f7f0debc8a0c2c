"""`cnnlab models`: list the zoo — name, family, canonical input, parameter count, description."""

from __future__ import annotations

from ..errors import ConfigError


def add_parser(sub):
    p = sub.add_parser("models", help="list the model zoo (name, family, parameters, description)",
                       description="List every registered model with its parameter count at its canonical "
                                   "input. Any name listed, or a network written in the lectures' notation "
                                   "(e.g. \"conv5-6p2 > relu > maxpool2 > fc100 > relu > fc10\"), is "
                                   "accepted wherever a model is, as are the papers' spellings shown under "
                                   "'also' (case and '-', '_' separators do not matter: LeNet-5, VGG-D, "
                                   "vgg16_bn, ResNet-18).")
    p.add_argument("--family", help="only this family (e.g. lenet, alexnet, vgg)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import json

    from ..models.registry import aliases_of, list_models

    everything = list_models()
    families = list(dict.fromkeys(m.family for m in everything))
    if args.family is not None and args.family not in families:
        raise ConfigError(f"unknown family {args.family!r}; known: {', '.join(families)}")
    rows = [{"name": m.name, "family": m.family, "input": list(m.canonical_input),
             "num_classes": m.num_classes, "params": m.num_params(), "aliases": aliases_of(m.name),
             "description": m.description}
            for m in everything if args.family is None or m.family == args.family]

    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cnnlab models ({len(rows)})")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("family", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("also", no_wrap=True)
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["family"], "x".join(map(str, r["input"])), f"{r['params']:,}",
                      ", ".join(r["aliases"]), r["description"])
    console = Console()
    if not console.is_terminal:  # a pipe or log gets 80 columns by default, which wraps every description
        console = Console(width=200)
    console.print(table)
    return 0
