"""`cnnlab predict RUN_DIR|MODEL.onnx IMAGE...`: top-k classes of image files (cnnlab.eval.predict_images).
With an .onnx file it runs in onnxruntime and never imports torch."""

from __future__ import annotations

EPILOG = """examples:
  cnnlab predict runs/lenet5-digits digit.png --topk 3
  cnnlab predict lenet5.onnx photos/ --out predictions.csv     a folder: one CSV row per image
  cnnlab predict runs/resnet18-cifar10 cat.jpg --tta 10crop --format json"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("predict", help="top-k classes of image files, from a run or an exported .onnx",
                       description="Classify image files (or every image in a folder) with a run's model, or "
                       "with an ONNX file written by `cnnlab export` (run in onnxruntime). Images get the "
                       "run's preprocessing: channels, resize policy, padding, normalisation.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="RUN_DIR|MODEL.onnx", help="a run directory or an exported .onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes to show per image (default 5; "
                                                                    "capped at the class count)")
    p.add_argument("--tta", metavar="NAME", help="test-time augmentation: flip, 5crop, 10crop or multiscale")
    p.add_argument("--weights", default="final", metavar="KIND", help="run weights: final, best, raw, ema, "
                                                                      "snapshot:K (default final)")
    p.add_argument("--format", choices=("table", "json", "csv"),
                   help="output format (default: csv when a folder is given, else table)")
    p.add_argument("--out", metavar="FILE", help="write the output to FILE (atomically) instead of stdout")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..eval.predict import list_images, predict_images, render_prediction
    from ..eval.tta import check_tta

    tta = check_tta(args.tta)
    if args.topk < 1:
        raise ConfigError(f"--topk must be a positive integer, got {args.topk}")
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out}: is a directory; give a file name")
        from ..runs import check_writable

        check_writable(out.parent if str(out.parent) else Path("."), "--out")
    _, folder = list_images(args.images)
    fmt = args.format or ("csv" if folder else "table")
    pred = predict_images(args.model, args.images, topk=args.topk, tta=tta, weights=args.weights)
    text = render_prediction(pred, fmt)
    if args.out:
        from ..utils.io import write_text_atomic

        write_text_atomic(args.out, text)
        print(f"wrote {len(pred.files)} predictions to {args.out}")
    else:
        print(text, end="")
    return 0
