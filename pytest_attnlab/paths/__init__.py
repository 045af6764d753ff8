"""Decode paths: how tokens are produced (HF `generate`, a static-KV CUDA-graph step, vLLM), by name.

A path is a factory `(options: PathOptions) -> DecodePath` (a subclass of `DecodePath`); users add
one from a conftest.py with `DECODE_PATHS.register("mine", MyPath)`. The name is the test id and the
CSV `backend` value; a run builds each path once (`PathCache`). The built-in paths import torch (and
vLLM) only when one is built, so option parsing stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from pytest_attnlab.paths.base import DECODE_PATHS, DecodePath, PathOptions
from pytest_attnlab.paths.cache import PathCache

_BUILTIN = {
    "hf": ("pytest_attnlab.paths.hf", "HFGeneratePath"),
    "fast": ("pytest_attnlab.paths.fast", "FastPath"),
    "vllm": ("pytest_attnlab.paths.vllm", "VLLMPath"),
}


def _lazy(module: str, cls: str) -> Any:
    def factory(options: PathOptions | None = None) -> DecodePath:
        return getattr(importlib.import_module(module), cls)(options)

    factory.__name__ = cls
    return factory


for _name, (_module, _cls) in _BUILTIN.items():
    if _name not in DECODE_PATHS:
        DECODE_PATHS.register(_name, _lazy(_module, _cls))


def __getattr__(name: str) -> Any:  # FastPath, HFGeneratePath, VLLMPath on first use
    for module, cls in _BUILTIN.values():
        if name == cls:
            return getattr(importlib.import_module(module), cls)
    raise AttributeError(name)


__all__ = ["DECODE_PATHS", "DecodePath", "FastPath", "HFGeneratePath", "PathCache", "PathOptions", "VLLMPath"]
