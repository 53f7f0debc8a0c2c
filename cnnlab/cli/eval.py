"""`cnnlab eval RUN_DIR`: how good a trained run is and where it fails (cnnlab.eval.evaluate_run)."""

from __future__ import annotations

EPILOG = """examples:
  cnnlab eval runs/lenet5-digits                         test split, final weights
  cnnlab eval runs/lenet5-digits --tta 10crop --format json
  cnnlab eval runs/a --ensemble runs/b runs/c            probabilities of three runs averaged
  cnnlab eval runs/snapshot-run --weights snapshots      the run's snapshots averaged
  cnnlab eval runs/resnet18-digits --fuse-bn             BatchNorm folded into the convs first (faster)
  cnnlab eval runs/lenet5-digits --data shared/data/usps.npz   other data, classes matched by name"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("eval", help="evaluate a run: top-k, per-class scores, confusion, calibration, TTA, "
                                    "ensembles", description="Evaluate a trained run on a split of its data "
                       "(or other data): top-1/top-5 error, loss, per-class accuracy/precision/recall/F1 with "
                       "the easiest and hardest classes, the confusion matrix (printed, CSV, PNG), the most "
                       "confidently wrong images (PNG) and calibration (ECE, reliability diagram PNG).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="a run directory written by cnnlab train")
    p.add_argument("--data", metavar="DATA", help="evaluate on other data (a dataset name, image folder or .npz); "
                   "its classes are matched to the run's by name (default: the run's own data)")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="which split (default test; data without a test split of its own is evaluated whole)")
    p.add_argument("--weights", default="final", metavar="KIND",
                   help="final, best, raw, ema, snapshot:K, or snapshots (every snapshot, averaged) "
                        "(default final)")
    p.add_argument("--tta", metavar="NAME", help="test-time augmentation: flip, 5crop, 10crop or multiscale "
                                                 "(probabilities averaged over the views)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_DIR", help="more runs whose probabilities are averaged "
                                                                   "with RUN_DIR's (same class list)")
    p.add_argument("--fuse-bn", action="store_true", help="fold each BatchNorm into the conv/linear layer before "
                   "it first: the same predictions up to float rounding, faster on CPU")
    p.add_argument("--out", metavar="DIR", help="where the CSV/PNG/JSON files go (default RUN_DIR/eval/<what>)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default cpu)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..eval.report import evaluate_run, render_report
    from ..eval.tta import check_tta
    from ..runs import Run, eval_dir

    tta = check_tta(args.tta)
    run = Run.open(args.run)
    out = args.out or eval_dir(run.path, args.split, args.weights, tta, bool(args.ensemble), args.data)
    report = evaluate_run(run, split=args.split, weights=args.weights, data=args.data, tta=tta,
                          ensemble=args.ensemble, out_dir=out, device=args.device, fuse_bn=args.fuse_bn)
    print(render_report(report, args.format), end="")
    return 0
