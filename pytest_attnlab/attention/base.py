"""What an attention variant is: a named object that can be installed into a loaded model and undone.

Two kinds share one protocol:
- `KernelVariant`: an attention function registered in transformers' `AttentionInterface`; the
  model's own attention layers call it once `config._attn_implementation` names it. Weights untouched.
- `ConversionVariant`: a structural change of every attention layer (GQA pooling, MLA low rank). It
  builds new attention modules beside the originals and swaps them in; undo puts the original module
  objects back, so the original weights are never modified (bit-identical after the swap back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import nn

from pytest_attnlab.probe import decoder_layers

Undo = Callable[[], None]


@runtime_checkable
class AttentionVariant(Protocol):
    """The protocol `ATTENTION` entries follow; `name` is the test id and the CSV `attention` value."""

    name: str
    kind: str  # "kernel" | "conversion"

    def unavailable(self, model: nn.Module) -> str | None:
        """A reason this variant cannot run on `model` (its device, its shape), or None."""

    def install(self, model: nn.Module) -> Undo:
        """Swap the variant into `model`; the returned callable restores the original exactly."""

    def kv_cache(self, model: nn.Module) -> KVCacheInfo:
        """KV-cache size per token (and any fixed state) this variant gives `model`."""


@dataclass(frozen=True)
class KVCacheInfo:
    """Cache cost of a model under a variant, all layers together.

    `bytes_per_token` is how much the cache grows per token; `cap_tokens` bounds the tokens that must
    be kept (sliding window + sinks: evictable beyond it); `state_bytes` is a fixed-size state per
    sequence (linear attention's recurrent state), independent of length.
    """

    bytes_per_token: int
    cap_tokens: int | None = None
    state_bytes: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kv_bytes_per_token": self.bytes_per_token,
            "kv_cap_tokens": self.cap_tokens,
            "kv_state_bytes": self.state_bytes,
        }


def attention_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, attention module) for each decoder layer's self-attention."""
    found = []
    for layer in decoder_layers(model):
        for attr in ("self_attn", "attention", "attn"):
            module = getattr(layer, attr, None)
            if isinstance(module, nn.Module):
                found.append((layer, attr, module))
                break
        else:
            raise ValueError(f"no self-attention module in {type(layer).__name__}")
    return found


def model_shape(model: nn.Module) -> dict[str, int]:
    """Attention shape of a HF causal LM from its (text) config."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    return {
        "layers": config.num_hidden_layers,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "hidden": config.hidden_size,
    }


def dtype_bytes(model: nn.Module) -> int:
    return next(model.parameters()).element_size()


def dense_kv(model: nn.Module) -> KVCacheInfo:
    """Standard K and V per token for every layer: 2 * kv_heads * head_dim elements."""
    s = model_shape(model)
    return KVCacheInfo(2 * s["kv_heads"] * s["head_dim"] * s["layers"] * dtype_bytes(model))



def set_implementation(model: nn.Module, key: str) -> None:
    """Point the model (and every sub-config) at attention implementation `key`."""
    model.set_attn_implementation(key)
    for sub in model.modules():  # sub-models whose config is not reached through `sub_configs`
        config = getattr(sub, "config", None)
        if config is not None and getattr(config, "_attn_implementation", key) != key:
            config._attn_implementation_internal = key

@dataclass
class KernelVariant:
    """An attention function run by the model's own layers through `AttentionInterface`.

    `implementation` names a built-in (eager, sdpa, flex_attention); otherwise `fn` is registered
    under `attnlab_<name>`. `mask` picks the mask builder the model uses for it ("sdpa": a boolean
    [b, 1, q, kv] mask or None for plain causal; None: no mask, the function applies causality).
    """

    name: str
    fn: Callable[..., Any] | None = None
    implementation: str | None = None
    mask: str | None = "sdpa"
    needs_cuda: bool = False
    kv: Callable[[nn.Module], KVCacheInfo] = dense_kv
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "kernel"

    @property
    def key(self) -> str:
        return self.implementation or f"attnlab_{self.name}"

    def unavailable(self, model: nn.Module) -> str | None:
        device = next(model.parameters()).device
        if self.needs_cuda and device.type != "cuda":
            return f"{self.name} needs a CUDA device (model is on {device}); on CPU its compile takes minutes"
        if not type(model)._can_set_attn_implementation():
            return f"{type(model).__name__} cannot switch attention at run time (no AttentionInterface support)"
        support = BUILTIN_SUPPORT.get(self.implementation or "")
        if support and not getattr(type(model), support, False):
            return f"{type(model).__name__} does not support {self.implementation} attention ({support} = False)"
        if self.fn is not None and softcap(model):
            return (
                f"{self.name} computes plain softmax attention; {type(model).__name__} soft-caps its attention "
                f"logits (attn_logit_softcapping={softcap(model)}), which it would drop"
            )
        return None

    def install(self, model: nn.Module) -> Undo:
        if self.fn is not None:
            _register(self.key, self.fn, self.mask)
        previous = model.config._attn_implementation
        set_implementation(model, self.key)

        def undo() -> None:
            set_implementation(model, previous)
            for _, _, module in attention_modules(model):
                module.__dict__.pop("_attnlab_state", None)

        return undo

    def kv_cache(self, model: nn.Module) -> KVCacheInfo:
        return self.kv(model)


#: built-in implementation -> the model-class flag transformers checks before running it
BUILTIN_SUPPORT = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}


def softcap(model: nn.Module) -> float | None:
    """The attention-logit soft-cap of the model's config (Gemma-2), or None."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "attn_logit_softcapping", None)


def projections_reason(model: nn.Module, name: str, needs: tuple[str, ...]) -> str | None:
    """Why a conversion that rebuilds `needs` (e.g. k_proj, v_proj as nn.Linear) cannot apply to `model`."""
    attn = attention_modules(model)[0][2]
    missing = [n for n in needs if not isinstance(getattr(attn, n, None), nn.Linear)]
    if not missing:
        return None
    linears = [n for n, m in attn.named_children() if isinstance(m, nn.Linear)]
    return (
        f"{name} rebuilds separate {'/'.join(needs)} projections; {type(attn).__name__} has "
        f"{', '.join(linears) or 'no nn.Linear'} (fused or quantized projections)"
    )


def _register(key: str, fn: Callable[..., Any], mask: str | None) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(key, fn)
    if mask is not None:
        AttentionMaskInterface.register(key, ALL_MASK_ATTENTION_FUNCTIONS[mask])


@dataclass
class ConversionVariant:
    """A structural conversion: `convert(attn_module, model)` returns the replacement module."""

    name: str
    convert: Callable[[nn.Module, nn.Module], nn.Module]
    check: Callable[[nn.Module], str | None]
    kv: Callable[[nn.Module], KVCacheInfo]
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "conversion"

    def unavailable(self, model: nn.Module) -> str | None:
        return self.check(model)

    def install(self, model: nn.Module) -> Undo:
        reason = self.check(model)
        if reason:
            raise ValueError(reason)
        originals = attention_modules(model)
        replacements = [(parent, attr, self.convert(module, model)) for parent, attr, module in originals]
        for parent, attr, new in replacements:
            setattr(parent, attr, new)

        def undo() -> None:
            for parent, attr, module in originals:
                setattr(parent, attr, module)

        return undo

    def kv_cache(self, model: nn.Module) -> KVCacheInfo:
        return self.kv(model)
