"""`cnnlab export RUN_DIR --format onnx|torchscript|safetensors --out FILE`: a run's model for other
runtimes, checked against the run on real images (cnnlab.eval.export_run)."""

from __future__ import annotations

EPILOG = """examples:
  cnnlab export runs/lenet5-digits --format onnx --out lenet5.onnx
  cnnlab export runs/resnet18-cifar10 --format onnx --fuse-bn --out r18.onnx
  cnnlab export runs/resnet18-cifar10 --format torchscript --channels-last --out r18.pt"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("export", help="export a run's model: ONNX, TorchScript or safetensors (parity-checked)",
                       description="Export a run's model in eval mode with a dynamic batch axis. The file is "
                       "loaded back (ONNX in onnxruntime) and compared with the run's model on real test images; "
                       "above 1e-4 max abs difference nothing is written. Class names and preprocessing go "
                       "into the file's metadata and a sidecar FILE.json.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="a run directory written by cnnlab train")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--weights", default="final", metavar="KIND",
                   help="final, best, raw, ema or snapshot:K (default final)")
    p.add_argument("--fuse-bn", action="store_true", help="fold every BatchNorm that follows a conv/linear "
                                                          "layer into it first")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (TorchScript)")
    p.add_argument("--check-images", type=int, default=32, metavar="N",
                   help="test images the parity check runs on (default 32)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..errors import ConfigError
    from ..eval.export import check_export_args, export_run

    check_export_args(args.format, args.out)
    if args.check_images < 1:
        raise ConfigError(f"--check-images must be a positive integer, got {args.check_images}")
    result = export_run(args.run, args.format, args.out, weights=args.weights, fuse_bn=args.fuse_bn,
                        channels_last=args.channels_last, parity_images=args.check_images)
    fused = ""
    if args.fuse_bn:
        fused = (f"; {result.folded} BatchNorm layers folded ({result.layers_before} -> {result.layers_after} "
                 f"layers)")
    checker = "onnxruntime" if args.format == "onnx" else "torch"
    print(f"wrote {result.path} ({args.format}, {result.path.stat().st_size:,} bytes){fused}\n"
          f"parity ({checker}, {result.parity_images} test images): max abs difference {result.max_abs_diff:.3g} "
          f"(tolerance 1e-4)\n"
          f"metadata: {len(result.metadata['classes'])} classes, preprocessing, in the file and in {result.sidecar}")
    return 0
