"""`cnnlab conv` (placeholder parser until the command lands; it refuses to run)."""

from ..errors import CnnlabError


def add_parser(sub):
    p = sub.add_parser("conv", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args):
    raise CnnlabError("this command is not implemented yet")
