"""Decode paths: how tokens are produced (HF `generate`, a static-KV CUDA-graph step), by name.

A path is a factory `(options: PathOptions) -> DecodePath`; users add one from a conftest.py with
`DECODE_PATHS.register("mine", MyPath)`. The name is the test id and the CSV `backend` value.
"""

from __future__ import annotations

from pytest_attnlab.perf.paths.base import DECODE_PATHS, DecodePath, PathOptions
from pytest_attnlab.perf.paths.fast import FastPath
from pytest_attnlab.perf.paths.hf import HFGeneratePath

DECODE_PATHS.register("hf", HFGeneratePath)
DECODE_PATHS.register("fast", FastPath)

__all__ = ["DECODE_PATHS", "DecodePath", "PathOptions", "FastPath", "HFGeneratePath"]
