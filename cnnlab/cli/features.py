"""`cnnlab features RUN_OR_MODEL --layer L --data DATA --out FILE.npz`: a network as a fixed feature extractor
(DeCAF): one layer's activations for every image, pooled, saved for `cnnlab probe` (and reused when the same
features were already computed)."""

from __future__ import annotations

EPILOG = """examples:
  cnnlab features runs/lenet5-digits --layer pre-logits --out f.npz        the run's own data and splits
  cnnlab features runs/lenet5-digits --layer stage2 --data usps.npz --out u.npz
  cnnlab features resnet18 --init imagenet --layer pre-logits --data my_images/ --out r18.npz
  cnnlab features alexnet --layer classifier.2 ...    any module path that `cnnlab summary` lists"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("features", help="extract a layer's activations (fixed feature extractor) into an .npz",
                       description="Run a trained network (a run directory) or a model (a name or notation, "
                                   "optionally with --init weights) in eval mode over every split of a dataset and "
                                   "save one layer's activations, globally pooled or flattened, for `cnnlab probe`.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_MODEL", help="a run directory, or a model name / notation")
    p.add_argument("--layer", default="pre-logits",
                   help="pre-logits (the vector fed to the final linear layer; default), a stage (stem, stageK, "
                        "head) or a module path such as layer3.1.conv2")
    p.add_argument("--data", help="dataset name or path (default for a run: its own data, split as in training)")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the features")
    p.add_argument("--pool", choices=("avg", "max", "flatten"), default="avg",
                   help="conv feature maps: global average or max pooling, or flattened (default: avg)")
    p.add_argument("--weights", default="final", help="a run's weights: final, best, raw, ema or snapshot:K")
    p.add_argument("--init", help="a model name's weights: as `cnnlab train --init` (run, file, URL, imagenet)")
    p.add_argument("--image-size", type=int, metavar="N", help="a model name: resize images to NxN")
    p.add_argument("--channels", type=int, choices=(1, 3), help="a model name: grey (1) or RGB (3)")
    p.add_argument("--limit-per-class", type=int, metavar="N", help="at most N images per class and split")
    p.add_argument("--seed", type=int, default=0, help="split (and fresh initialisation) seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import sys

    from ..transfer.features import extract_features

    fs = extract_features(args.source, args.layer, args.data, out=args.out, pool=args.pool, weights=args.weights,
                          init=args.init, image_size=args.image_size, channels=args.channels,
                          limit_per_class=args.limit_per_class, seed=args.seed, batch_size=args.batch_size,
                          device=args.device)
    for note in fs.notes:
        print(f"cnnlab features: note: {note}", file=sys.stderr)
    sizes = "/".join(str(n) for n in fs.sizes().values())
    how = "cached (same source, data and layer)" if fs.cached else f"computed in {fs.seconds:.1f} s"
    shape = "x".join(map(str, fs.meta.get("shape", []))) or "?"
    print(f"features: {fs.meta['layer']} of {fs.meta['source']} on {fs.meta['data']}: {shape} per image → "
          f"{fs.dim} ({fs.meta['pool']}), train/val/test {sizes} images, {len(fs.classes)} classes; "
          f"{how}; written to {fs.path}")
    return 0
