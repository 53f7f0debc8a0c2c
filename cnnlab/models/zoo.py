"""Imports every model family so that their builders register. Add a family here."""

from . import lenet  # noqa: F401
