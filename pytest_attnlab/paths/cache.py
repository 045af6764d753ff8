"""The run's decode-path objects, one per name, so static caches, CUDA graphs and the vLLM engine are
built once, whoever asks (perf's `generation_benchmark` and grid, the backends' `backend_path`)."""

from __future__ import annotations

from pytest_attnlab.paths.base import DECODE_PATHS, DecodePath, PathOptions


class PathCache:
    """`cache(name)`: DECODE_PATHS' `name` built from `options` on first use, the same object after."""

    def __init__(self, options: PathOptions) -> None:
        self.options = options
        self.paths: dict[str, DecodePath] = {}

    def __call__(self, name: str) -> DecodePath:
        if name not in self.paths:
            path = DECODE_PATHS.get(name)(self.options)
            if not isinstance(path, DecodePath):
                raise TypeError(f"decode path {name!r}: {type(path).__name__} does not subclass paths.DecodePath")
            self.paths[name] = path
        return self.paths[name]
