"""Lazy package exports (PEP 562): a package names each export and the module it lives in, and the
module is imported on first access, so importing the package (as the pytest plugin does) imports no torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that resolves `name` from `where[name]` (a module path) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__
