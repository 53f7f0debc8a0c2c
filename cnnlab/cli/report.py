"""`cnnlab report RUN_DIR`: the run's self-contained HTML page (configuration, layers, curves, the evaluation on
the test split, filters, Grad-CAM and occlusion), written to RUN_DIR/report.html and nothing else. `cnnlab train`
writes it at the end of every run unless --no-report."""

from __future__ import annotations

from .viz import image_spec, out_file, run_dir


def add_parser(sub):
    p = sub.add_parser("report", help="write a run's self-contained HTML report page",
                       description="One HTML file with every picture embedded (no network, opens from disk, "
                       "readable on a phone): the configuration, the layer table, the training curves, the "
                       "evaluation on the test split (confusion matrix, hardest classes, most confidently wrong "
                       "images), the first-layer filters, a Grad-CAM and an occlusion example. It writes only this "
                       "page.")
    p.add_argument("run", metavar="RUN_DIR", type=run_dir, help="a run directory written by `cnnlab train`")
    p.add_argument("--image", type=image_spec, default="test:0", metavar="IMAGE",
                   help="the Grad-CAM and occlusion example: an image file or SPLIT:INDEX (default: test:0)")
    p.add_argument("--weights", default="final", metavar="KIND",
                   help="which kept weights the pictures use: final, best, raw, ema or snapshot:K (default: final)")
    p.add_argument("--out", type=out_file(".html"), metavar="FILE", help="where to write it (default: "
                   "RUN_DIR/report.html)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..eval.report import evaluate_run
    from ..viz.config import ReportConfig
    from ..viz.report import write_report

    path = write_report(ReportConfig(args.run, args.image, args.weights, args.out), evaluate=evaluate_run)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): open it in a web browser", flush=True)
    return 0
