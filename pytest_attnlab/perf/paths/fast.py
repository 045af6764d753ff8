"""Static KV cache + hand-written decode step (static_decode), captured in a CUDA graph on GPU.

The known-good route on torch 2.11 / transformers 5.17: `torch.compile(mode="reduce-overhead")`
over HF's StaticCache failed ("accessing tensor output of CUDAGraphs that has been overwritten"),
so the step is captured by hand with torch.cuda.CUDAGraph, optionally after torch.compile without
cudagraphs (mode `default` or `max-autotune-no-cudagraphs`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from pytest_attnlab import progress
from pytest_attnlab.perf import static_decode as sd
from pytest_attnlab.perf.paths.base import PathOptions


class GraphedStep:
    """`step(tok, pos) -> next tok`, replayed from one CUDA graph over static input buffers."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tok: torch.Tensor, pos: torch.Tensor):
        self.tok, self.pos = tok.clone(), pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (and compile) off the capture
            for _ in range(3):
                fn(self.tok, self.pos)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(self.tok, self.pos)

    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.tok.copy_(tok)
        self.pos.copy_(pos)
        self.graph.replay()
        return self.out.clone()  # the graph overwrites self.out on the next replay


class CompiledStep:
    """Calls a torch.compile'd step; its first call, where the compilation happens (60-170 s on a
    GPU), runs inside a progress step so the terminal shows it."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str) -> None:
        self.fn, self.name, self.compiled = fn, name, False

    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            return self.fn(tok, pos)
        with progress.step(self.name):
            out = self.fn(tok, pos)
            if out.is_cuda:
                torch.cuda.synchronize()  # the step's time is the compilation's plus one run, not a launch
        self.compiled = True
        return out


class FastPath:
    name = "fast"

    def __init__(self, options: PathOptions | None = None) -> None:
        self.options = options or PathOptions()
        self.sm: sd.StaticModel | None = None
        self.cache: sd.StaticCache | None = None
        self.step: Any = None
        self._model_id: int | None = None
        self._shape: tuple[int, int] | None = None

    @torch.no_grad()
    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        if self._model_id != id(model):
            self.sm, self._model_id, self._shape = sd.from_hf(model), id(model), None
        assert self.sm is not None
        self.sm.decode_attention = self.options.decode_attention
        # max_len rounded up to 64: aligned masks keep SDPA on its fused kernels
        shape = (batch, -(-(prompt_len + new_tokens) // 64) * 64)
        if self._shape == shape:  # same cell as before: reuse the cache and the captured graph
            return
        self.step = None  # free the old graph's pool before the new cache is made
        self.cache = sd.new_cache(self.sm, *shape)
        self._shape = shape

        def greedy_step(sm: Any, cache: Any, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            return sd.greedy(sd.decode_one_token(sm, cache, tok, pos), sm.banned)

        fn: Any = partial(greedy_step, self.sm, self.cache)
        if self.options.compile != "none":
            fn = torch.compile(fn, mode=self.options.compile, fullgraph=True, dynamic=False)
            fn = CompiledStep(fn, f"torch.compile decode step ({self.options.compile}, batch {batch})")
        device = self.sm.embed.device
        if device.type == "cuda" and self.options.cuda_graph:
            tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
            pos = torch.tensor([prompt_len], device=device)
            fn = GraphedStep(fn, tok, pos)
        self.step = fn

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, new_tokens: int, on_token: Callable[[], None]) -> torch.Tensor:
        assert self.sm is not None and self.cache is not None, "call prepare() first"
        if ids.shape[0] != self.cache.k[0].shape[0] or ids.shape[1] + new_tokens > self.cache.max_len:
            raise ValueError(f"prepared for {self._shape} (batch, max_len), got ids {tuple(ids.shape)} + {new_tokens}")
        first = sd.greedy(sd.prefill(self.sm, self.cache, ids), self.sm.banned)
        on_token()
        rest = sd.decode_n_tokens(self.step, first, ids.shape[1], new_tokens - 1, lambda _t: on_token())
        return torch.cat([first, *rest], dim=1)
