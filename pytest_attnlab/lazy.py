"""Lazy package exports (PEP 562): a package names each module and the exports it holds, and the
module is imported on first access, so importing the package (as the pytest plugin does) imports no torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` and `__all__` from `where` (module path, relative to `package` with a leading
    dot -> its exported names, space separated): each name is resolved from its module on first use."""
    modules = {name: module for module, names in where.items() for name in names.split()}

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(modules[name], package), name)

    return __getattr__, sorted(modules)
