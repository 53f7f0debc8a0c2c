"""The `cnnlab` command: a thin argparse front over the Python API.

Each sub-command lives in its own module here with `add_parser(subparsers)`; the module must stay light
to import (heavy imports inside its run function) so that `cnnlab --help` and `cnnlab summary` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CnnlabError

# Sub-command modules, in the order `cnnlab --help` lists them.
COMMAND_MODULES = (
    "train",
    "lr_find",
    "models",
    "summary",
    "compare",
    "conv",
    "explain",
    "data",
    "eval",
    "predict",
    "export",
    "viz",
    "report",
    "env",
    "features",
    "probe",
    "transfer_study",
    "runs",
    "experiment",
    "sweep",
)


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors, but on one line with the option named, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="cnnlab", description="Convolutional neural networks as the lectures teach them: "
                     "build, analyse, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{mod_name}").add_parser(sub)
    return parser


def _show_warning(command: str):
    """warnings.showwarning for the CLI: cnnlab's own notes as one line "cnnlab CMD: note: ..."; other
    libraries' warnings (numpy, Pillow, torch) are not shown to the user as extra lines."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from ..errors import CnnlabWarning

        if issubclass(category, CnnlabWarning):
            print(f"cnnlab {command}: note: {message}", file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous = warnings.showwarning
    warnings.showwarning = _show_warning(args.command)
    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A file the user named (or a folder to write into) that cannot be read or written: the OS says
        # which path and why, which is the whole story. An OSError without a path is no user input's
        # fault we can name, so it keeps its traceback.
        if exc.filename is None:
            raise
        paths = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        print(f"cnnlab {args.command}: error: {paths}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted (nothing was saved for this step)", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
