"""`cnnlab viz PICTURE RUN_DIR ...`: pictures of what a trained run learned, written as PNGs into RUN/viz/.

    filters RUN [--layer NAME]                      a conv layer's kernels
    activations RUN IMAGE [--layers NAME ...]       the feature maps of one image, layer by layer
    top-patches RUN --layer NAME [--data DATA]      the patches that excite each unit most (Zeiler & Fergus)
    occlusion RUN IMAGE [--patch 8 --stride 4]      the class probability as a grey square covers the image
    gradcam RUN IMAGE [--layer NAME] [--class C]    Grad-CAM (default layer: the last stage)
    saliency RUN IMAGE [--method ...]               gradient saliency or integrated gradients
    curves RUN [RUN ...]                            loss, accuracy and learning rate per epoch, runs compared

Options are checked when parsed; the work is in cnnlab.viz (what a Python user would call)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

IMAGE_HELP = ("an image file (decoded, resized and padded as the run's data was; a file in a folder named after "
              "a class takes that class as its true label), or SPLIT:INDEX of the run's own data, e.g. test:0")
LAYER_HELP = "a stage name (stem, stage1, …) or a module path such as features.3 (see `cnnlab summary RUN_DIR`)"


MAX_COUNT = 1_000_000  # units, patches, filters, steps, batch sizes: far above any picture's need


def positive_int(text: str) -> int:
    """A count in [1, MAX_COUNT]; an absurd one is refused when parsed (and not echoed back in full)."""
    from ..utils.limits import short_int, short_text

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short_text(repr(text), 40)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short_int(value)}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {MAX_COUNT:,}, got {short_int(value)}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def run_dir(text: str) -> str:
    """RUN_DIR: a directory holding a run's config.json (its contents are read later, by cnnlab.runs)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such run directory")
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a run directory (no config.json)")
    return text


def image_spec(text: str) -> str:
    from ..viz.config import check_image_spec

    try:
        return check_image_spec(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("IMAGE ")) from None


def out_file(suffix: str):
    """--out FILE: not a directory, not inside a file."""

    def check(text: str) -> str:
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name such as "
                                             f"{path / ('picture' + suffix)}")
        parent = next((q for q in path.parents if q.exists()), None)
        if parent is not None and not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a directory")
        return text

    return check


def out_dir(text: str) -> str:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory")
    return text


def _common(p, image: bool = True, out: str | None = "--out") -> None:
    p.add_argument("run", metavar="RUN_DIR", type=run_dir, help="a run directory written by `cnnlab train`")
    if image:
        p.add_argument("image", metavar="IMAGE", type=image_spec, help=IMAGE_HELP)
    p.add_argument("--weights", default="final", metavar="KIND",
                   help="which kept weights: final, best, raw, ema or snapshot:K (default: final)")
    if out:
        p.add_argument(out, dest="out", metavar="FILE", type=out_file(".png"),
                       help="where to write the PNG (default: a predictable name in RUN_DIR/viz/)")


def add_parser(sub):
    p = sub.add_parser("viz", help="pictures of a trained run: filters, feature maps, top patches, occlusion, "
                       "Grad-CAM, saliency, training curves",
                       description="Draw what a trained run learned, as PNGs written into RUN_DIR/viz/ with "
                       "predictable names (e.g. viz/filters-features.0.png). Attributions use Captum.",
                       epilog="examples:\n  cnnlab viz filters runs/lenet5\n  cnnlab viz activations runs/lenet5 "
                       "test:0\n  cnnlab viz top-patches runs/lenet5 --layer stage1 --units 8\n  cnnlab viz "
                       "occlusion runs/lenet5 test:0 --patch 8 --stride 4\n  cnnlab viz gradcam runs/lenet5 test:0 "
                       "--class 3\n  cnnlab viz curves runs/a runs/b",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    vsub = p.add_subparsers(dest="picture", metavar="PICTURE", required=True)

    f = vsub.add_parser("filters", help="a conv layer's kernels as an image grid",
                        description="One tile per kernel, normalised per filter: RGB tiles for a 3-channel first "
                        "layer, otherwise greyscale with rows = filters and columns = input channels.")
    _common(f, image=False)
    f.add_argument("--layer", help=LAYER_HELP + "; a stage means its first convolution (default: the first "
                   "convolution)")
    f.add_argument("--max-filters", type=positive_int, default=64, metavar="N", help="draw at most N filters (64)")
    f.add_argument("--max-channels", type=positive_int, default=16, metavar="N",
                   help="draw at most N input channels per filter (16)")
    f.set_defaults(func=_filters)

    a = vsub.add_parser("activations", help="the feature maps one image makes, one grid per layer",
                        description="One PNG per layer: the input beside the layer's maps on one colour scale.")
    _common(a, out=None)
    a.add_argument("--layers", nargs="+", metavar="NAME", help=LAYER_HELP + ", or `stages` for every stage "
                   "(default: every conv and pooling layer)")
    a.add_argument("--max-maps", type=positive_int, default=64, metavar="N", help="draw at most N maps per layer")
    a.add_argument("--out-dir", type=out_dir, metavar="DIR", help="where to write the PNGs (default: RUN_DIR/viz)")
    a.set_defaults(func=_activations)

    t = vsub.add_parser("top-patches", help="the dataset patches that excite each unit most (Zeiler & Fergus)",
                        description="One pass over the data with a running top-k per unit; each patch is the "
                        "unit's receptive field (from cnnlab's analysis) around its strongest position.")
    _common(t, image=False)
    t.add_argument("--layer", required=True, help=LAYER_HELP)
    t.add_argument("--data", help="the data to search: a dataset name or path, read as the run reads its own "
                   "(default: the run's data)")
    t.add_argument("--split", choices=("train", "val", "test"), default="val", help="which split (default: val)")
    t.add_argument("--units", type=positive_int, default=8, metavar="K", help="the first K units (channels) (8)")
    t.add_argument("--top", type=positive_int, default=9, metavar="N", help="patches per unit (9)")
    t.add_argument("--batch-size", type=positive_int, default=256, metavar="B", help="images per forward pass")
    t.set_defaults(func=_top_patches)

    o = vsub.add_parser("occlusion", help="the drop in a class's probability as a grey square covers the image",
                        description="Captum's Occlusion: a grey square slid over the image, the occluded images "
                        "evaluated in batches; the heat map is the drop in p(class) averaged over the squares "
                        "covering each pixel.")
    _common(o)
    o.add_argument("--patch", type=positive_int, default=8, metavar="P", help="square side in pixels (8)")
    o.add_argument("--stride", type=positive_int, default=4, metavar="S", help="step between squares (4)")
    o.add_argument("--class", dest="target", metavar="C", help="class name or index (default: the true class when "
                   "known, else the predicted one)")
    o.add_argument("--grey", type=fraction, default=0.5, metavar="G", help="the square's pixel value, 0-1 (0.5)")
    o.add_argument("--batch-size", type=positive_int, default=64, metavar="B", help="occluded images per pass")
    o.set_defaults(func=_occlusion)

    g = vsub.add_parser("gradcam", help="Grad-CAM heat map over the image",
                        description="Captum's LayerGradCam at a layer's output (default: the last stage before "
                        "the head; a 1×1 last stage falls back to the deepest larger one), upsampled to the image.")
    _common(g)
    g.add_argument("--layer", help=LAYER_HELP + " (default: the last stage)")
    g.add_argument("--class", dest="target", metavar="C", help="class name or index (default: the predicted one)")
    g.set_defaults(func=_gradcam)

    s = vsub.add_parser("saliency", help="per-pixel attributions: gradient saliency or integrated gradients",
                        description="Captum's Saliency (|gradient|, max over colour channels) or "
                        "IntegratedGradients (from the black image, summed over channels).")
    _common(s)
    s.add_argument("--method", choices=("gradient", "integrated-gradients"), default="gradient",
                   help="attribution method (default: gradient)")
    s.add_argument("--class", dest="target", metavar="C", help="class name or index (default: the predicted one)")
    s.add_argument("--steps", type=positive_int, default=32, metavar="N", help="integrated gradients: path points")
    s.set_defaults(func=_saliency)

    c = vsub.add_parser("curves", help="loss, accuracy and learning rate per epoch, several runs compared",
                        description="Training dashed, validation solid, one colour per run.")
    c.add_argument("runs", metavar="RUN_DIR", nargs="+", type=run_dir, help="one or more run directories")
    c.add_argument("--labels", nargs="+", metavar="NAME", help="legend names, one per run (default: folder names)")
    c.add_argument("--out", type=out_file(".png"), metavar="FILE", help="PNG path (default: FIRST_RUN/viz/curves.png)")
    c.set_defaults(func=_curves)


def _wrote(path, what: str = "") -> None:
    print(f"wrote {path}" + (f" ({what})" if what else ""), flush=True)


def _filters(args) -> int:
    from ..viz.config import FiltersConfig
    from ..viz.filters import plot_filters

    path, fg = plot_filters(FiltersConfig(args.run, args.layer, args.weights, args.max_filters, args.max_channels,
                                          args.out))
    _wrote(path, fg.title)
    return 0


def _activations(args) -> int:
    from ..viz.activations import plot_activations
    from ..viz.config import ActivationsConfig

    for path in plot_activations(ActivationsConfig(args.run, args.image, args.layers, args.weights, args.max_maps,
                                                   args.out_dir)):
        _wrote(path)
    return 0


def _top_patches(args) -> int:
    from ..viz.config import TopPatchesConfig
    from ..viz.top_patches import plot_top_patches

    path, tp = plot_top_patches(TopPatchesConfig(args.run, args.layer, args.data, args.split, args.units, args.top,
                                                 args.weights, args.batch_size, args.out))
    h, w = tp.patch_size
    _wrote(path, f"{len(tp.units)} units × {tp.values.shape[1]} patches of {h}×{w} from {tp.scanned} images")
    return 0


def _occlusion(args) -> int:
    from ..viz.config import OcclusionConfig
    from ..viz.heatmaps import plot_occlusion

    path, occ = plot_occlusion(OcclusionConfig(args.run, args.image, args.patch, args.stride, args.target, args.grey,
                                               args.weights, args.batch_size, args.out))
    _wrote(path, f"class {occ.target}: p = {occ.probability:.3f} uncovered, largest drop {float(occ.drop.max()):.3f}")
    return 0


def _gradcam(args) -> int:
    from ..viz.config import GradCamConfig
    from ..viz.heatmaps import plot_grad_cam

    path, gc = plot_grad_cam(GradCamConfig(args.run, args.image, args.layer, args.target, args.weights, args.out))
    _wrote(path, f"class {gc.target}: p = {gc.probability:.3f}")
    return 0


def _saliency(args) -> int:
    from ..viz.config import SaliencyConfig
    from ..viz.heatmaps import plot_saliency

    path, _ = plot_saliency(SaliencyConfig(args.run, args.image, args.method, args.target, args.steps, args.weights,
                                           args.out))
    _wrote(path)
    return 0


def _curves(args) -> int:
    from ..viz.config import CurvesConfig
    from ..viz.curves import plot_curves

    _wrote(plot_curves(CurvesConfig(list(args.runs), args.labels, args.out)))
    return 0
