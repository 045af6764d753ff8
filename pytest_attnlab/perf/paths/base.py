"""The DecodePath protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_attnlab.registry import Registry

COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class PathOptions:
    compile: str = "none"  # torch.compile mode for the fast path's decode step, or "none"
    cuda_graph: bool = True  # capture the fast path's decode step in a CUDA graph on GPU
    decode_attention: str = "math"  # the fast path's decode attention: sdpa | math (static_decode)

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile: invalid mode {self.compile!r}; choose from: {', '.join(COMPILE_MODES)}")


class DecodePath(Protocol):
    name: str

    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Build what the timed runs reuse (caches, graphs); not timed."""

    def generate(self, ids: Any, new_tokens: int, on_token: Callable[[], None]) -> Any:
        """Greedy-decode exactly `new_tokens` tokens for every row of `ids` [batch, prompt_len];
        call `on_token()` right after each token has been enqueued; return them [batch, new_tokens].

        Optional: `weights_read(shape, batch) -> (weight bytes per decode step, KV element bytes) | None`,
        for a path that runs its own copy of the weights (vLLM: its checkpoint at its engine dtype);
        the roofline (MBU) then uses it instead of the HF model's parameter bytes."""


DECODE_PATHS: Registry[Callable[[PathOptions], DecodePath]] = Registry("decode path")
