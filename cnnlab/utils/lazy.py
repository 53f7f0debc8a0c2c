"""Lazy package exports (PEP 562): `import cnnlab` and `cnnlab --help` do not pay for importing torch
(about a second) until a name that needs it is used."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """`__getattr__` and `__dir__` for `package`: exports maps a public name to "module:attr" (relative to
    the package), or to "module" for a submodule exported under its own name. Resolved names are cached
    in the package's namespace, so each import happens once."""

    def __getattr__(name: str) -> object:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name, package)
        value = getattr(module, attr) if attr else module
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
