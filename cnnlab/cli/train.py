"""`cnnlab train [MODEL] --data DATA ...`: parse flags → TrainConfig → cnnlab.train.train(config).

Every TrainConfig field is a flag (help text from the field); a YAML/JSON `--config` file holds the same
keys and explicit flags override it. With no arguments it runs the main job: LeNet-5 on the digits."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..train.config import LR_KEYWORDS, TrainConfig, parse_model_opts, read_config_file

EPILOG = """examples:
  cnnlab train                                    LeNet-5 on the digits (the default job)
  cnnlab train resnet18 --data cifar10 --epochs 30 --optimizer sgd --lr 0.1 --schedule cosine --augment crop:4,flip
  cnnlab train --config run.yaml --lr 0.05        a config file, one option overridden
  cnnlab train --resume runs/20240101-120000-lenet5-digits
  torchrun --nproc_per_node=2 -m cnnlab train lenet5 --data mnist   (DistributedDataParallel; gloo on CPU)
  multi-machine: torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
                 -m cnnlab train ...  (same command on every machine)"""


def _lr(text: str):
    """--lr: a number, 'by-model' or 'auto'."""
    if text in LR_KEYWORDS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, 'by-model' or 'auto', got {text!r}") from None


def _type(f):
    if f.metadata.get("parse") == "lr":
        return _lr
    kind = str(f.type)
    return int if kind.startswith("int") else float if kind.startswith("float") else str


def add_arguments(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field, defaults suppressed so only explicit flags override a config file."""
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        meta, default = f.metadata, f.default if f.default is not f.default_factory else None
        shown = "" if default in (None, "") or str(f.type).startswith("dict") else f" (default: {default})"
        if meta.get("positional"):
            p.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=meta["help"] + shown)
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        if str(f.type).startswith("bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=meta["help"] + shown)
        elif str(f.type).startswith("dict"):
            p.add_argument(flag, dest=f.name, action="append", default=argparse.SUPPRESS, metavar="KEY=VALUE",
                           help=meta["help"])
        else:
            p.add_argument(flag, dest=f.name, type=_type(f), choices=meta.get("choices"),
                           default=argparse.SUPPRESS, metavar=None if meta.get("choices") else f.name.upper(),
                           help=meta["help"] + shown)


def add_parser(sub):
    p = sub.add_parser("train", help="train a model (default: LeNet-5 on the digits)",
                       description="Train a CNN; writes a run directory with config, metrics, checkpoints, "
                                   "weights and result.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of options (keys = the long option names); "
                                                    "flags given here override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint "
                                                       "(with its saved configuration)")
    p.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report.html (the run's HTML "
                   "report page, `cnnlab report`) at the end")
    add_arguments(p)
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed flags (and --config file) describe."""
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    if "model_opts" in overrides:
        overrides["model_opts"] = parse_model_opts(overrides["model_opts"])
    if args.config:
        base = read_config_file(args.config)
        if "model_opts" in overrides and isinstance(base.get("model_opts"), dict):
            overrides["model_opts"] = {**base["model_opts"], **overrides["model_opts"]}
        return TrainConfig.from_dict({**base, **overrides}, source=str(args.config)).validate()
    return TrainConfig.from_dict(overrides, source="command line").validate()


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train import train
    from ..train.run import RESUME_OVERRIDES

    if args.resume:
        given = [k for k in vars(args) if k in {f.name for f in fields(TrainConfig)}]
        refused = [k for k in given if k not in RESUME_OVERRIDES]
        if refused or args.config:
            flags = ", ".join("--" + k.replace("_", "-") for k in refused) or "--config"
            raise ConfigError(f"--resume continues a run with its saved configuration; only --quiet, --threads "
                              f"and --device may be given with it (drop {flags})")
        result = _interruptible(lambda: train(resume=args.resume, **{k: getattr(args, k) for k in given}))
    else:
        result = _interruptible(lambda: train(config_from_args(args)))
    print(final_line(result.summary, result.run_dir), flush=True)
    if not args.no_report:
        _write_report(result.run_dir)
    return 0


def _write_report(run_dir) -> None:
    """RUN_DIR/report.html (cnnlab.viz.report, with the evaluation of cnnlab.eval on the test split), written by
    the main process only; a report that cannot be written is a note, not a failed run."""
    import warnings

    from ..errors import CnnlabError, CnnlabWarning
    from ..train.distributed import env_info

    if run_dir is None or not env_info().is_main:
        return
    from ..eval.report import evaluate_run
    from ..viz.report import build_report

    try:
        path = build_report(run_dir, evaluate=evaluate_run)
    except CnnlabError as exc:
        warnings.warn(f"report not written: {exc}", CnnlabWarning)
        return
    print(f"report: {path}", flush=True)


def final_line(summary: dict, run_dir) -> str:
    """The one line `cnnlab train` ends with: test accuracy (correct/total), epochs, time, where the run is."""
    correct = round(summary["test_accuracy"] * summary["test_count"])
    epochs = summary["epochs"]
    early = ""
    if summary.get("stopped_early"):
        early = f" (early stop; best epoch {summary['best_epoch']} kept)"
    return (f"test accuracy {summary['test_accuracy']:.4f} ({correct}/{summary['test_count']}) after {epochs} "
            f"epoch{'s' if epochs != 1 else ''}{early}, {summary['seconds']:.1f} s of training; run written to "
            f"{run_dir}")


def _interruptible(fn):
    """Run `fn`; on Ctrl-C say where the checkpoint is and how to continue (exit 130)."""
    from ..train.trainer import TrainingInterrupted

    try:
        return fn()
    except TrainingInterrupted as stop:
        raise SystemExit(_interrupted_message(stop)) from None


def _interrupted_message(stop) -> str:
    import sys

    where = f"in epoch {stop.epoch} at step {stop.step}" if stop.step else f"before epoch {stop.epoch}"
    print(f"cnnlab train: interrupted {where}; checkpoint saved in {stop.run_dir}/checkpoints. Continue with:\n"
          f"  cnnlab train --resume {stop.run_dir}", file=sys.stderr, flush=True)
    return 130
