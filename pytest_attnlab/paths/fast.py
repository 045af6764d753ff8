"""Static KV cache + hand-written decode step (static_decode), captured in a CUDA graph on GPU.

The known-good route on torch 2.11 / transformers 5.17: `torch.compile(mode="reduce-overhead")`
over HF's StaticCache failed ("accessing tensor output of CUDAGraphs that has been overwritten"),
so the step is captured by hand with torch.cuda.CUDAGraph, optionally after torch.compile without
cudagraphs (mode `default` or `max-autotune-no-cudagraphs`).

The first call of a compiled step compiles it: `FastPath.compile_s` is that call's time (compilation
plus one run), with inductor's FX-graph and autotune caches under `PathOptions.inductor_cache`, so a
second run of the same variant and cell loads instead of compiling. `compile_cache` says which.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from pytest_attnlab import progress
from pytest_attnlab.paths import static_decode as sd
from pytest_attnlab.paths.base import DecodePath, PathOptions
from pytest_attnlab.paths.scoring import Scored, stacked, top_logprobs


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


@contextmanager
def inductor_cache_dir(directory: str) -> Iterator[None]:
    """TORCHINDUCTOR_CACHE_DIR=directory while inside (inductor reads it on every cache lookup and
    hands it to its compile workers); "" leaves torch's own default."""
    if not directory:
        yield
        return
    key, old = "TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.makedirs(directory, exist_ok=True)
    os.environ[key] = directory
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _compile_counters() -> tuple[int, int, int]:
    """Graphs dynamo compiled, inductor FX-graph cache hits and misses, so far in this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return counters["stats"]["unique_graphs"], inductor["fxgraph_cache_hit"], inductor["fxgraph_cache_miss"]


def _cache_outcome(before: tuple[int, int, int], after: tuple[int, int, int]) -> str:
    """reused: no new graph (this process compiled it for an earlier cell); hit / miss / partial:
    what inductor's FX-graph cache did for the new graphs; bypass: it was not consulted."""
    graphs, hits, misses = (a - b for a, b in zip(after, before, strict=True))
    if not graphs:
        return "reused"
    return {(True, False): "hit", (False, True): "miss", (True, True): "partial"}.get((hits > 0, misses > 0), "bypass")


class CompiledStep:
    """Calls a torch.compile'd step; its first call, where the compilation happens (60-170 s on a
    GPU), runs inside a progress step so the terminal shows it, with the inductor cache directory
    set; `seconds` is its time and `cache` what the caches did (_cache_outcome)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str, cache_dir: str) -> None:
        self.fn, self.name, self.cache_dir, self.compiled = fn, name, cache_dir, False
        self.seconds: float | None = None
        self.cache = ""

    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            return self.fn(tok, pos)
        before = _compile_counters()
        start = time.perf_counter()
        with progress.step(self.name), inductor_cache_dir(self.cache_dir):
            out = self.fn(tok, pos)
            if out.is_cuda:
                torch.cuda.synchronize()  # the step's time is the compilation's plus one run, not a launch
        self.seconds = time.perf_counter() - start
        self.cache = _cache_outcome(before, _compile_counters())
        self.compiled = True
        return out


class FastPath(DecodePath):
    name = "fast"
    plain_weights_only = True

    def __init__(self, options: PathOptions | None = None) -> None:
        self.options = options or PathOptions()
        self.model: Any = None
        self.sm: sd.StaticModel | None = None
        self.cache: sd.StaticCache | None = None
        self.step: Any = None
        self._model_id: tuple[int, str] | None = None  # the model and GEMV kernels self.sm was built for
        self.cell = self.options  # the variant the prepared cell runs (options.for_batch)
        self._shape: tuple[int, int] | None = None
        self._compiled: CompiledStep | None = None
        self.convert_s = 0.0  # building the StaticModel (fusing, int4 quantization and packing)

    @property
    def compile_s(self) -> float | None:
        """Seconds of the current cell's first compiled step (compilation + one run); None uncompiled
        or not yet called."""
        return self._compiled.seconds if self._compiled is not None else None

    @property
    def compile_cache(self) -> str:
        """What the compile of the current cell's step did: reused, hit, miss, partial, bypass."""
        return self._compiled.cache if self._compiled is not None else ""

    @torch.no_grad()
    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        self.model = model
        opts = self.cell = self.options.for_batch(batch)  # auto's pick may change with the batch (AUTO_WIDE_BATCH)
        if self._model_id != (id(model), opts.gemv):
            start = time.perf_counter()
            self.sm = None  # the old kernels' weights go before the new ones are made
            self.sm = sd.from_hf(model, opts.weights, opts.quant, opts.gemv)
            self.convert_s = time.perf_counter() - start
            self._model_id, self._shape = (id(model), opts.gemv), None
        assert self.sm is not None
        sd.check_decode_attention(self.sm, opts.fast_attention)
        self.sm.decode_attention = opts.fast_attention
        # max_len rounded up to 64: aligned masks keep SDPA on its fused kernels
        shape = (batch, -(-(prompt_len + new_tokens) // 64) * 64)
        if self._shape == shape:  # same cell as before: reuse the cache and the captured graph
            return
        self.step, self._compiled = None, None  # free the old graph's pool before the new cache is made
        self.cache = sd.new_cache(self.sm, *shape)
        self._shape = shape

        def greedy_step(sm: Any, cache: Any, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            return sd.greedy(sd.decode_one_token(sm, cache, tok, pos), sm.banned)

        fn: Any = partial(greedy_step, self.sm, self.cache)
        self.sm.decode_layer = None
        if opts.compile != "none":
            wrap = partial(torch.compile, mode=opts.compile, fullgraph=True, dynamic=False)
            if opts.compile_scope == "layer":  # the step stays eager around one compiled layer graph
                self.sm.decode_layer = wrap(sd.layer_forward)
            else:
                fn = wrap(fn)
            name = f"torch.compile decode {opts.compile_scope} ({opts.variant}, batch {batch})"
            fn = self._compiled = CompiledStep(fn, name, opts.inductor_cache)
        device = self.sm.embed.device
        if device.type == "cuda" and opts.cuda_graph:
            tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
            pos = torch.tensor([prompt_len], device=device)
            fn = GraphedStep(fn, tok, pos)
        self.step = fn

    def weights_read(self, shape: Any, batch: int) -> tuple[int, int] | None:
        """With int4 weights, the bytes a step reads are the packed codes, scales and zeros, not the
        HF model's parameters (DecodePath.weights_read); None keeps the model's own count."""
        if self.sm is None or self.sm.quant == "none":
            return None
        return self.sm.step_weight_bytes(batch), self.sm.embed.element_size()

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, new_tokens: int, on_token: Callable[[], None]) -> torch.Tensor:
        assert self.sm is not None and self.cache is not None, "call prepare() first"
        if ids.shape[0] != self.cache.k[0].shape[0] or ids.shape[1] + new_tokens > self.cache.max_len:
            raise ValueError(f"prepared for {self._shape} (batch, max_len), got ids {tuple(ids.shape)} + {new_tokens}")
        first = sd.greedy(sd.prefill(self.sm, self.cache, ids), self.sm.banned)
        on_token()
        rest = sd.decode_n_tokens(self.step, first, ids.shape[1], new_tokens - 1, lambda _t: on_token())
        return torch.cat([first, *rest], dim=1)

    @torch.no_grad()
    def step_loop(self, ids: torch.Tensor) -> Callable[[], torch.Tensor]:
        """A call that runs one decode step through the timed step (the CUDA-graph replay on GPU),
        after a prefill of `ids`, each call feeding the last one's token; positions cycle over the
        prepared cell's cache, so any number of calls fits it (what perf.profile_step profiles)."""
        assert self.sm is not None and self.cache is not None, "call prepare() first"
        tok = [sd.greedy(sd.prefill(self.sm, self.cache, ids), self.sm.banned)]
        positions = itertools.cycle(torch.arange(ids.shape[1], self.cache.max_len, device=ids.device).split(1))

        @torch.no_grad()
        def one() -> torch.Tensor:
            tok[0] = self.step(tok[0], next(positions))
            return tok[0]

        return one

    @torch.inference_mode()
    def greedy_logprobs(self, ids: torch.Tensor, new_tokens: int, top_k: int) -> Scored:
        """The eager step's logits, on the prepared model's default layout (fused, its own dtype)."""
        sm = sd.from_hf(self.model)
        cache = sd.new_cache(sm, ids.shape[0], ids.shape[1] + new_tokens)
        logits = sd.prefill(sm, cache, ids.to(sm.embed.device))
        toks, steps = [], []
        for i in range(new_tokens):
            tok = sd.greedy(logits, sm.banned)
            toks.append(tok)
            steps.append(top_logprobs(logits.cpu(), top_k, tok[:, 0].cpu()))
            if i + 1 < new_tokens:
                pos = torch.tensor([ids.shape[1] + i], device=tok.device)
                logits = sd.decode_one_token(sm, cache, tok, pos)
        return stacked(steps, torch.cat(toks, dim=1).cpu())
