"""`cnnlab explain`: interactive, self-contained HTML pages.

    cnnlab explain conv [conv options] --html FILE     a convolution step by step (options as `cnnlab conv`)
    cnnlab explain MODEL [--input CxHxW] --html FILE   a model's graph, receptive fields, pixel contributions
    cnnlab explain RUN_DIR IMAGE --html FILE           a trained run's feature maps and probabilities for IMAGE

The first word picks the page type; the rest is parsed by that type's own parser, so `cnnlab explain conv
--help` and `cnnlab explain MODEL --help` describe their options. MODEL and RUN_DIR IMAGE share a parser:
a second positional (IMAGE) selects the run page.
"""

from __future__ import annotations

import argparse

from .conv import add_conv_arguments

_USAGE = ("cnnlab explain conv [conv options] --html FILE\n"
          "       cnnlab explain MODEL [--input CxHxW] [--num-classes K] --html FILE\n"
          "       cnnlab explain RUN_DIR IMAGE [--weights KIND] [--max-channels N] --html FILE")


def add_parser(sub):
    p = sub.add_parser("explain", help="write an interactive HTML page: a convolution step by step, or a "
                       "model's graph with receptive fields", usage=_USAGE,
                       description="Write one self-contained HTML page (inline CSS and JavaScript, numbers "
                       "computed by cnnlab and embedded; it opens from disk with no server and no network). "
                       "`explain conv` animates a convolution: the lectures' examples are preloaded "
                       "(--demo filter-bank, x-filter, cartesian-axes, stride-7x7) and your own input takes "
                       "the options of `cnnlab conv`. `explain MODEL` draws a registered model, the lectures' "
                       "notation or a saved run's architecture as a graph; tap a unit of a layer to see its "
                       "receptive field on the input. `explain RUN_DIR IMAGE` shows what a trained run computes "
                       "for IMAGE: the input as the run preprocesses it, each stage's feature maps (tap one for "
                       "the kernels that made it) and the class probabilities.",
                       epilog="See `cnnlab explain conv --help` and `cnnlab explain MODEL --help` (also for "
                       "RUN_DIR IMAGE) for each form's options; options come after conv, MODEL or IMAGE.")
    p.add_argument("target", metavar="conv|MODEL|RUN_DIR",
                   help="'conv' for the convolution explainer, or a model: a registered name (`cnnlab models`), "
                   "the lectures' notation in quotes, or a saved run directory (followed by IMAGE: the run page)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _html_file(text: str):
    """--html FILE, checked when parsed: not a directory, and not inside something that is a file."""
    from pathlib import Path

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name such as {path / 'page.html'}")
    parent = next((q for q in path.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a directory")
    return path


def _image_file(text: str):
    """IMAGE, checked when parsed: an existing file (whether it decodes is checked before any work)."""
    from pathlib import Path

    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _weights_kind(text: str) -> str:
    """--weights, checked when parsed: final, best, raw, ema or snapshot:K."""
    from ..errors import ConfigError
    from ..runs import weights_path

    try:
        weights_path(".", text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected final, best, raw, ema or snapshot:K") from None
    return text


def _html_argument(p) -> None:
    p.add_argument("--html", required=True, metavar="FILE", type=_html_file,
                   help="where to write the page (one .html file, written atomically; missing folders are made)")


def conv_parser() -> argparse.ArgumentParser:
    from . import _Parser

    p = _Parser(prog="cnnlab explain conv", description="Write a page that animates a convolution: the kernel "
                "moving over the padded input channel by channel, the products and their sum, the output "
                "cell it fills; step, play, pause and go to an output (i, j). Changing stride or padding in "
                "the page re-evaluates (W - F + 2P)/S + 1 and says when it does not fit. Every lecture "
                "example is in the page; --demo picks the one it opens with, --input/--kernel add yours.")
    add_conv_arguments(p, page=True)
    _html_argument(p)
    return p


def model_parser() -> argparse.ArgumentParser:
    from . import _Parser

    from ..explain.run_page import FILTER_INPUTS, MAX_CHANNELS, TILE_SIDE

    p = _Parser(prog="cnnlab explain MODEL", usage="%(prog)s [--input CxHxW] [--num-classes K] --html FILE\n"
                "       cnnlab explain RUN_DIR IMAGE [--weights KIND] [--max-channels N] --html FILE",
                description="MODEL: write a page with MODEL's data-flow graph (branches "
                "of ResNet and GoogLeNet side by side), each layer's output shape, parameters, FLOPs and "
                "receptive field from `cnnlab summary`; hover or tap a unit of a layer to highlight its "
                "receptive field on the input, and toggle how many of the layer's units see each input pixel. "
                "RUN_DIR IMAGE: write a page with IMAGE preprocessed as the run's training images were "
                "(channels, resize policy, padding, normalisation), every stage's feature maps (one tile per "
                f"channel, the first {MAX_CHANNELS} by default; maps over {TILE_SIDE} px averaged down), and "
                "the class probabilities; tap a tile to see it enlarged beside the kernels of the convolution "
                f"that produced it (its first {FILTER_INPUTS} input channels). The page stays under 3 MiB.")
    p.add_argument("model", metavar="MODEL|RUN_DIR",
                   help="a registered name, the lectures' notation, or a run directory (`cnnlab train --out`)")
    p.add_argument("image", metavar="IMAGE", nargs="?", type=_image_file,
                   help="with a run directory: the image to explain (.png, .jpg, .bmp, .webp)")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x224x224 (default: the model's own)")
    p.add_argument("--num-classes", type=int, metavar="K", help="classifier width (default: the model's)")
    p.add_argument("--weights", metavar="KIND", type=_weights_kind,
                   help="with IMAGE: which kept weights: final (default), best, raw, ema or snapshot:K")
    p.add_argument("--max-channels", type=_positive_int, metavar="N",
                   help=f"with IMAGE: feature-map tiles per stage, its first N channels (default {MAX_CHANNELS})")
    _html_argument(p)
    return p


def _run(args) -> int:
    if args.target == "conv":
        return _run_conv(conv_parser().parse_args(args.rest))
    return _run_model(model_parser().parse_args([args.target, *args.rest]))


def _report(path) -> None:
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1024:.0f} KiB): open it in a web browser")


def _run_conv(ns) -> int:
    from ..explain.conv_page import conv_page
    from ..explain.page import write_page
    from .conv import spec_from_args

    given = ns.demo or ns.input is not None or ns.kernel
    spec = spec_from_args(ns) if given else None
    _report(write_page(ns.html, conv_page(spec)))
    return 0


def _run_model(ns) -> int:
    from ..analysis.resolve import parse_input
    from ..errors import ConfigError
    from ..explain.model_page import ModelPageConfig, model_page
    from ..explain.page import write_page

    if ns.image is not None:
        return _run_image(ns)
    for option, value in (("--weights", ns.weights), ("--max-channels", ns.max_channels)):
        if value is not None:
            raise ConfigError(f"{option} applies to a run's image page: `cnnlab explain RUN_DIR IMAGE {option} ...`")
    if ns.num_classes is not None and ns.num_classes < 1:
        raise ConfigError(f"--num-classes must be positive, got {ns.num_classes}")
    cfg = ModelPageConfig(ns.model, parse_input(ns.input) if ns.input else None, ns.num_classes)
    _report(write_page(ns.html, model_page(cfg)))
    return 0


def _run_image(ns) -> int:
    """`explain RUN_DIR IMAGE`: everything is checked (run, weights, image) before the page is built."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..explain.page import write_page
    from ..explain.run_page import MAX_CHANNELS, RunPageConfig, run_page

    for option, value in (("--input", ns.input), ("--num-classes", ns.num_classes)):
        if value is not None:
            raise ConfigError(f"{option}: a run's image page uses the run's own input size and classes")
    if not Path(ns.model).is_dir():
        raise ConfigError(f"{ns.model}: explaining IMAGE needs a trained run directory (`cnnlab train --out DIR`), "
                          "not a model name; `cnnlab explain MODEL --html FILE` draws a model's architecture")
    cfg = RunPageConfig(ns.model, str(ns.image), ns.weights or "final", ns.max_channels or MAX_CHANNELS)
    _report(write_page(ns.html, run_page(cfg)))
    return 0
