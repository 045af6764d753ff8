"""The DecodePath base class (the protocol, with its optional capabilities) and the paths' options."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_attnlab.registry import Registry

if TYPE_CHECKING:
    from pytest_attnlab.paths.scoring import Scored

COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")
#: what torch.compile wraps: the whole decode step (one graph, cross-layer fusion) or one layer
#: (one graph for all layers: a fraction of the compile time, launches between layers not fused)
COMPILE_SCOPES = ("step", "layer")
#: how the fast path stores q/k/v and gate/up: one concatenated linear each, or the model's own three and two
FAST_WEIGHTS = ("fused", "separate")
#: the fast path's weight format: the model's dtype, or RTN int4 per group on the grid of rtn-<name>: int4-gN
#: with the Q4_1 minimum as its zero (tinygemm's form), int4-gN-zp with integer zero points (GPTQ/AWQ's, Marlin's)
FAST_QUANT = ("none", "int4-g128", "int4-g32", "int4-g128-zp")
INT4_FORMAT = re.compile(r"^int4-g(\d+)(-zp)?$")


def int4_format(quant: str) -> tuple[int, str]:
    """(group, quant.grid's zero form) of an int4 FAST_QUANT: int4-g128 -> (128, "float"), -zp -> (128, "int")."""
    found = INT4_FORMAT.match(quant)
    if found is None:
        raise ValueError(f"{quant!r} is not an int4 format; choose from {[q for q in FAST_QUANT if q != 'none']}")
    return int(found.group(1)), "int" if found.group(2) else "float"


#: the fast path's decode GEMVs: torch (cuBLAS / tinygemm), triton (paths/triton_gemv.py, CUDA only) or
#: triton-fused (the same kernels taking the norms, RoPE, cache writes and residual adds, batch 1-32) or marlin
#: (cuBLAS, and vLLM's Marlin for int4-gN-zp: paths/marlin_int4.py, CUDA with vLLM)
FAST_GEMV = ("torch", "triton", "triton-fused", "marlin")
#: keys of decode_attention.DECODE_ATTENTION (listed here so option parsing needs no torch)
FAST_ATTENTION = ("sdpa", "math", "triton")
#: what `auto` (the options' default) picks for PathOptions' `gemv`, `fast_attention` and `compile`: (on CUDA
#: with triton, elsewhere). The CUDA pick is the variant measured fastest whose greedy and logits checks pass on
#: a GPU (issue 29): at batch 1, triton-fused GEMVs with Triton attention, uncompiled (H100, 2026-12-06: 2.66 ms
#: a token on the 3B shape to the compiled cuBLAS step's 3.41; 0.52 / 0.97 ms on the embedded model); from
#: AUTO_WIDE_BATCH rows on, the compiled cuBLAS step (PathOptions.for_batch).
AUTO_FAST = {"gemv": ("triton-fused", "torch"), "fast_attention": ("triton", "math"), "compile": ("none", "none")}
#: from this batch on, `auto` on CUDA (gemv and compile both left auto, weights not int4) runs the compiled cuBLAS
#: step (gemv torch, compile default, step scope) with auto's attention. Side by side on one H100 (2026-12-06,
#: prompt 512, bf16; scripts/gpu/fast_variants.sh R batch / batch2 and docs/perf.md), TPOT compiled / candidate:
#:   3B shape      b2 3.34 / 3.41   b4 3.51 / 3.53   b8 3.59 / 3.68   b16 3.56 / 3.68   b32 4.00 / 4.76 ms
#:   0.5B shape    b2 1.17 / 1.34                    b8 1.17 / 1.44                     b32 1.34 / 1.76 ms
#:   embedded      b2 0.97 / 0.94                    b8 1.01 / 1.06                     b32 1.21 / 1.31 ms
#: The candidate's rows kernels (2+ rows) cost a step of their own: 2.66 -> 3.41 ms from batch 1 to 2 on the 3B
#: shape. The first step of a cell compiles (13-27 s on that H100; compile_s).
AUTO_WIDE_BATCH = 2


def resolve_auto(field: str, value: str, device: str) -> str:
    """`value` of PathOptions' `field`, with `auto` made AUTO_FAST's pick for `device` (e.g. "cuda:0")."""
    if value != "auto":
        return value
    best, anywhere = AUTO_FAST[field]
    return best if _cuda_pick(device) else anywhere


def _cuda_pick(device: str) -> bool:
    import importlib.util

    return device.startswith("cuda") and importlib.util.find_spec("triton") is not None


def auto_wide_from(gemv: str, compile: str, device: str) -> int:
    """PathOptions.wide_from for these option values: AUTO_WIDE_BATCH where both are `auto` and the CUDA pick
    applies, else 0 (every batch runs the variant as resolved)."""
    return AUTO_WIDE_BATCH if gemv == compile == "auto" and _cuda_pick(device) else 0


#: a Triton GEMV launch config: output rows a program x input columns a step, warps, [pipeline stages],
#: [split-K ways, 2+ rows only], [pdl | nopdl]: 1x1024w4, 2x2048w4s3pdl, 16x256w4s3k4 (paths/triton_gemv.Config)
GEMV_CONFIG = re.compile(r"^(\d+)x(\d+)w(\d+)(?:s(\d+))?(?:k(\d+))?(pdl|nopdl)?$")
#: vLLM's KV-cache dtypes that make sense for a user to pick (vllm.config.cache.CacheDType).
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
#: weights/activations dtype of the engine; auto = the --attnlab-dtype the HF reference uses.
VLLM_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class PathOptions:
    compile: str = "none"  # torch.compile mode for the fast path's decode step, or "none"
    cuda_graph: bool = True  # capture the fast path's decode step in a CUDA graph on GPU
    fast_attention: str = "math"  # --attnlab-perf-fast-attention: FAST_ATTENTION (StaticModel.decode_attention)
    compile_scope: str = "step"  # COMPILE_SCOPES
    weights: str = "fused"  # FAST_WEIGHTS
    quant: str = "none"  # FAST_QUANT
    gemv: str = "torch"  # FAST_GEMV
    inductor_cache: str = ""  # TORCHINDUCTOR_CACHE_DIR while the step compiles; "": torch's own
    vllm_quant_format: str = "auto"  # checkpoint format quantized models reach vLLM in
    wide_from: int = 0  # from this batch on, for_batch() is the compiled cuBLAS step (auto's pick); 0: never
    engines: Any = field(default=None, compare=False)  # the run's vLLM EngineHolder; None: the path's own

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("compile", self.compile, COMPILE_MODES),
            ("compile_scope", self.compile_scope, COMPILE_SCOPES),
            ("weights", self.weights, FAST_WEIGHTS),
            ("quant", self.quant, FAST_QUANT),
            ("gemv", self.gemv, FAST_GEMV),
        ):
            if value not in choices:
                raise ValueError(f"{name}: invalid value {value!r}; choose from: {', '.join(choices)}")

    def for_batch(self, batch: int) -> PathOptions:
        """The variant a cell of `batch` rows runs: this one, or from `wide_from` rows on (auto on CUDA, weights
        not int4) the compiled cuBLAS step with the same attention (AUTO_WIDE_BATCH)."""
        if not self.wide_from or batch < self.wide_from or self.quant != "none":
            return self
        return replace(self, gemv="torch", compile="default", compile_scope="step", wide_from=0)

    def context(self) -> dict[str, str]:
        """The fast-path variant as metrics.csv context: rows of different variants stay distinct."""
        return {
            "compile": self.compile,
            "compile_scope": self.compile_scope if self.compile != "none" else "none",
            "fast_attention": self.fast_attention,
            "fast_weights": self.weights,
            "fast_quant": self.quant,
            "fast_gemv": self.gemv,
        }

    @property
    def variant(self) -> str:
        """A short name for the variant, e.g. `default-math-fused-int4-g32` (test ids, benchmark groups)."""
        return "-".join(self.context().values())


class DecodePath(ABC):
    """How tokens are produced. `prepare` and `generate` are required; `weights_read`, `describe` and
    `greedy_logprobs` are capabilities whose defaults say "not supported"."""

    name: str
    #: runs its own attention on its own plain copy of the weights: a quantizer or attention variant applied to
    #: the HF model is not what it runs (a Case with one skips)
    plain_weights_only = False

    @abstractmethod
    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Build what the timed runs reuse (caches, graphs); not timed."""

    @abstractmethod
    def generate(self, ids: Any, new_tokens: int, on_token: Callable[[], None]) -> Any:
        """Greedy-decode exactly `new_tokens` tokens for every row of `ids` [batch, prompt_len];
        call `on_token()` right after each token has been enqueued; return them [batch, new_tokens]."""

    def weights_read(self, shape: Any, batch: int) -> tuple[int, int] | None:
        """(weight bytes per decode step, KV element bytes) for a path that runs its own copy of the
        weights (vLLM: its checkpoint at its engine dtype; the fast path's packed int4): the roofline
        (MBU) then uses it instead of the HF model's parameter bytes. None: the HF model's own."""
        return None

    def describe(self) -> dict[str, str]:
        """How the path ran the last prepared cell, as metrics.csv context (vLLM: route, kernels)."""
        return {}

    def greedy_logprobs(self, ids: Any, new_tokens: int, top_k: int) -> Scored:
        """Greedy tokens [batch, new_tokens] of the prepared model and, per step, the top-k {token:
        logprob} of raw logits (the cross-backend correctness suite); the default skips the test."""
        import pytest

        pytest.skip(f"backend {self.name!r} has no greedy_logprobs(ids, new_tokens, top_k) method")


DECODE_PATHS: Registry[Callable[[PathOptions], DecodePath]] = Registry("decode path")
