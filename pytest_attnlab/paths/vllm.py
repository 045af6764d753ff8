"""`vllm`: a DecodePath (paths.base) over vLLM's offline engine, plus greedy top-k logprobs.

Per-token timestamps come from stepping the engine (`LLMEngine.step()`): each step returns the
requests' outputs so far, and `on_token()` fires as soon as every sequence of the batch holds one
more token, i.e. when the token reaches the caller, as vLLM's streaming benchmark times its
chunks. vLLM's own per-request timestamps (RequestOutput.metrics) are kept in `last_metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pytest_attnlab.paths.base import DecodePath, PathOptions
from pytest_attnlab.paths.scoring import Scored
from pytest_attnlab.paths.vllm_engine import (
    EngineHolder,
    EngineSettings,
    VLLMUnavailable,
    checkpoint_bytes,
    checkpoint_for,
    import_vllm,
    on_cpu,
    quantized_reason,
    weights_differ,
)
from pytest_attnlab.paths.vllm_quant import VLLMQuantUnsupported, VLLMRoute, route
from pytest_attnlab.quant.api import quantized_from

_ids = itertools.count()


class VLLMPath(DecodePath):
    name = "vllm"

    def __init__(self, options: PathOptions | None = None, *, engines: EngineHolder | None = None) -> None:
        options = options or PathOptions()
        engines = engines or options.engines
        if engines is None:  # used outside pytest: its own engine with the default settings
            import tempfile
            from pathlib import Path

            engines = EngineHolder(EngineSettings(), Path(tempfile.mkdtemp(prefix="attnlab-vllm-")))
        self.engines = engines
        self.llm: Any = None
        self.last_metrics: list[Any] = []
        #: checkpoint format quantized models are exported to (--attnlab-vllm-quant-format)
        self.export_format = options.vllm_quant_format
        #: how the last prepare()d model reached vLLM, and the engine dtype it runs at
        self.route: VLLMRoute | None = None
        self.engine_dtype = engines.settings.dtype
        self.folder: Any = None
        self.kv_cache_dtype = engines.settings.kv_cache_dtype
        #: the linear layers' quant methods and kernels vLLM picked ("UnquantizedLinearMethod x196")
        self.kernels = ""

    def prepare(self, model: Any, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Build (or reuse) the engine for `model`'s checkpoint; skips when vLLM cannot run it.

        A model made by pytest_attnlab.quant.quantize() goes through its vLLM route (in-flight or an
        exported checkpoint of the same weights, paths/vllm_quant.py); any other model must be its
        checkpoint's weights."""
        import pytest

        limit = self.engines.settings.max_model_len
        if prompt_len + new_tokens > limit:
            pytest.skip(f"vllm: prompt {prompt_len} + {new_tokens} new tokens > --attnlab-vllm-max-model-len {limit}")
        try:
            import_vllm()
        except VLLMUnavailable as exc:
            pytest.skip(str(exc))
        settings = self.engines.settings
        qmodel = quantized_from(model)
        if qmodel is not None:
            try:
                self.route = route(qmodel, on_cpu(), settings.dtype, self.export_format)
            except VLLMQuantUnsupported as exc:
                pytest.skip(f"vllm x {qmodel.quant}: {exc}")
            folder = self.route.checkpoint or checkpoint_for(qmodel.base.model, self.engines.workdir)
            settings = settings.with_extra(**self.route.extra)
            if self.route.dtype:
                settings = replace(settings, dtype=self.route.dtype)
        else:
            reason = quantized_reason(model)
            if reason:
                pytest.skip(
                    f"vllm: {reason}; vLLM loads its own weights from the checkpoint, so only "
                    "quantizers with a vLLM route run through it (paths/vllm_quant.py)"
                )
            folder = checkpoint_for(model, self.engines.workdir)
            differ = weights_differ(model, folder)
            if differ:
                pytest.skip(
                    f"vllm: the model's weights are not its checkpoint's ({differ}); vLLM would run other weights"
                )
            self.route = VLLMRoute("plain")
        self.engine_dtype = settings.dtype
        self.folder = folder
        self.kv_cache_dtype = settings.kv_cache_dtype
        llm = self.engines.get(folder, settings)
        if llm is not self.llm or not self.kernels:
            self.kernels = linear_kernels(llm)
        self.llm = llm

    def describe(self) -> dict[str, str]:
        """How the engine ran the last prepare()d model: route, dtype, CUDA graphs, linear kernels."""
        return {
            "vllm_route": self.route.how if self.route else "",
            "vllm_dtype": self.engine_dtype,
            "vllm_enforce_eager": str(self.engines.settings.enforce_eager),
            "vllm_kernels": self.kernels,
        }

    def weights_read(self, shape: Any, batch: int) -> tuple[int, int] | None:
        """(weight bytes one decode step reads, KV element bytes) for the checkpoint the engine runs:
        floats at the engine dtype, packed int4 as stored; an untied input embedding is only gathered."""
        import torch

        if self.folder is None:
            return None
        elem = torch.empty(0, dtype=getattr(torch, self.engine_dtype)).element_size()
        total, embedding = checkpoint_bytes(self.folder, elem)
        if not shape.tied:
            total += batch * shape.hidden * elem - embedding
        kv = 1 if self.kv_cache_dtype.startswith("fp8") else elem
        return total, kv

    def _params(self, new_tokens: int, logprobs: int | None = None) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=0.0,
            max_tokens=new_tokens,
            min_tokens=new_tokens,
            ignore_eos=True,
            detokenize=False,
            logprobs=logprobs,
        )

    def generate(self, ids: Any, new_tokens: int, on_token: Callable[[], None]) -> Any:
        import torch

        assert self.llm is not None, "call prepare() first"
        engine = self.llm.llm_engine
        params = self._params(new_tokens)
        rows = ids.tolist()
        run = next(_ids)
        request_ids = [f"attnlab-{run}-{i}" for i in range(len(rows))]
        for rid, row in zip(request_ids, rows, strict=True):
            engine.add_request(rid, {"prompt_token_ids": row}, params)
        counts = dict.fromkeys(request_ids, 0)
        final: dict[str, Any] = {}
        marked = 0
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.request_id in counts:
                    counts[out.request_id] = len(out.outputs[0].token_ids)
                    final[out.request_id] = out
            ready = min(counts.values())
            while marked < ready:
                on_token()
                marked += 1
        self.last_metrics = [final[r].metrics for r in request_ids]
        tokens = [list(final[r].outputs[0].token_ids) for r in request_ids]
        return torch.tensor(tokens, dtype=torch.long)

    def greedy_logprobs(self, ids: Any, new_tokens: int, top_k: int) -> Scored:
        """Greedy tokens [batch, new_tokens] and per step the top-k {token: logprob} of raw logits."""
        from vllm.inputs import TokensPrompt

        assert self.llm is not None, "call prepare() first"
        prompts = [TokensPrompt(prompt_token_ids=row) for row in ids.tolist()]
        outs = self.llm.generate(prompts, self._params(new_tokens, logprobs=top_k), use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        top = [[{int(t): float(lp.logprob) for t, lp in step.items()} for step in o.outputs[0].logprobs] for o in outs]
        return Scored(tokens, top)


def _kernels_of(model: Any) -> dict[str, int]:
    """Runs in vLLM's worker (LLM.apply_model): quant method (and kernel) -> number of layers."""
    seen: dict[str, int] = {}
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is None or not hasattr(module, "output_size"):  # linear layers only
            continue
        scheme = getattr(module, "scheme", None)  # compressed-tensors keeps its kernel on the scheme
        kernel = getattr(scheme or method, "kernel", None)
        name = type(scheme or method).__name__ + (f"/{type(kernel).__name__}" if kernel is not None else "")
        seen[name] = seen.get(name, 0) + 1
    return seen


def linear_kernels(llm: Any) -> str:
    """ "Method/Kernel xN; ..." for the engine's linear layers, or why it could not be read."""
    try:
        per_worker = llm.apply_model(_kernels_of)
    except Exception as exc:  # an engine without apply_model, or one that refuses to pickle the function
        return f"unknown ({type(exc).__name__}: {str(exc)[:120]})"
    seen = per_worker[0] if per_worker else {}
    return "; ".join(f"{k} x{n}" for k, n in sorted(seen.items()))
