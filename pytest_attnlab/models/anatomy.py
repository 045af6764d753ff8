"""Where a decoder's parts are, read from the loaded model instead of assumed from Llama's names.

Per decoder layer: the attention projections (separate q/k/v, Phi-3's fused `qkv_proj`, GPT-NeoX's
per-head interleaved `query_key_value`), the MLP (gated, fused gate/up, or plain), every norm, the
sliding window; per model: the rotary embedding and its rotated dims. A layout is an entry of a
registry (`ATTENTION_LAYOUTS`, `MLP_LAYOUTS`; norms in `pytest_attnlab.formulas.NORM_KINDS`), so a
conftest.py can add a family; a model that matches none raises `UnknownLayout`, whose message
names what was found, and the suites turn that into a skip with the reason.

    layer = anatomy(model).layers[0]
    q = layer.attention.q.apply(x)          # the q rows of whichever linear holds them, in float64
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytest_attnlab.formulas import norm_kind
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.registry import Registry


class UnknownLayout(ValueError):
    """The model's structure matches no registered layout; the message names what was found."""


@dataclass(frozen=True)
class Rows:
    """The output rows of one linear (all of them, or those of a fused linear) that play one role."""

    linear: nn.Linear
    name: str  # path inside the decoder layer, e.g. "self_attn.qkv_proj"
    index: torch.Tensor | None = None  # None: every row

    @property
    def fused(self) -> bool:
        return self.index is not None

    @property
    def out_features(self) -> int:
        return self.linear.out_features if self.index is None else int(self.index.numel())

    def weight(self) -> torch.Tensor:
        w = self.linear.weight
        return w if self.index is None else w[self.index.to(w.device)]

    def bias(self) -> torch.Tensor | None:
        b = self.linear.bias
        return b if b is None or self.index is None else b[self.index.to(b.device)]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T + b in float64 (the rows of this role only)."""
        b = self.bias()
        return F.linear(x.double(), self.weight().double(), None if b is None else b.double())


@dataclass(frozen=True)
class Shape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int | None


@dataclass
class Attention:
    module: nn.Module
    layout: str
    q: Rows
    k: Rows
    v: Rows
    o: Rows
    #: parameterised sub-modules the attention formula does not model (q/k norms, ...)
    unmodelled: list[str] = field(default_factory=list)


@dataclass
class MLP:
    module: nn.Module
    layout: str
    up: Rows
    down: Rows
    gate: Rows | None = None  # None: a plain (ungated) MLP, down(act(up(x)))


@dataclass
class Layer:
    index: int
    module: nn.Module
    attention: Attention | None
    mlp: MLP | None
    norms: dict[str, nn.Module]  # path inside the layer -> norm module, in module order
    sliding_window: int | None
    problems: dict[str, str] = field(default_factory=dict)  # "attention"/"mlp" -> why it has no layout


@dataclass
class Anatomy:
    model: nn.Module
    shape: Shape
    layers: list[Layer]
    rotary: nn.Module | None
    rotary_dim: int  # head dims the rotary embedding turns (partial rotary: fewer than head_dim)
    tied_embeddings: bool

    def attention(self, index: int) -> Attention:
        layer = self.layers[index]
        if layer.attention is None:
            raise UnknownLayout(layer.problems["attention"])
        return layer.attention

    def mlp(self, index: int) -> MLP:
        layer = self.layers[index]
        if layer.mlp is None:
            raise UnknownLayout(layer.problems["mlp"])
        return layer.mlp


@dataclass(frozen=True)
class Layout:
    """A family's convention: `match(module)` says whether it applies, `split(module, path, shape)`
    returns the parts (Attention or MLP fields)."""

    match: Callable[[nn.Module], bool]
    split: Callable[[nn.Module, str, Shape], dict[str, Any]]


ATTENTION_LAYOUTS: Registry[Layout] = Registry("attention layout")
MLP_LAYOUTS: Registry[Layout] = Registry("MLP layout")
ATTENTION_ATTRS = ("self_attn", "attention", "attn", "self_attention")
MLP_ATTRS = ("mlp", "feed_forward", "ffn")


def _linears(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in names)


def _rows(start: int, stop: int) -> torch.Tensor:
    return torch.arange(start, stop)


def _separate_qkv(attn: nn.Module, path: str, s: Shape) -> dict[str, Any]:
    return {n: Rows(getattr(attn, f"{n}_proj"), f"{path}.{n}_proj") for n in "qkvo"}


def _fused_qkv(attn: nn.Module, path: str, s: Shape) -> dict[str, Any]:
    """Phi-3: one `qkv_proj` whose output is [q | k | v] (heads*d, kv*d, kv*d rows)."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    fused, name = attn.qkv_proj, f"{path}.qkv_proj"
    if fused.out_features != q + 2 * kv:
        raise UnknownLayout(f"{name} has {fused.out_features} rows, not q+k+v = {q} + {kv} + {kv}")
    return {
        "q": Rows(fused, name, _rows(0, q)),
        "k": Rows(fused, name, _rows(q, q + kv)),
        "v": Rows(fused, name, _rows(q + kv, q + 2 * kv)),
        "o": Rows(attn.o_proj, f"{path}.o_proj"),
    }


def _neox_qkv(attn: nn.Module, path: str, s: Shape) -> dict[str, Any]:
    """GPT-NeoX: `query_key_value` viewed as [heads, 3 * head_dim]: each head's q, k, v side by side."""
    d, fused, name = s.head_dim, attn.query_key_value, f"{path}.query_key_value"
    if s.kv_heads != s.heads or fused.out_features != 3 * s.heads * d:
        raise UnknownLayout(f"{name} has {fused.out_features} rows, not 3 x {s.heads} heads x {d}")
    base = torch.arange(s.heads)[:, None] * 3 * d
    part = {n: (base + i * d + torch.arange(d)[None]).reshape(-1) for i, n in enumerate("qkv")}
    return {**{n: Rows(fused, name, part[n]) for n in "qkv"}, "o": Rows(attn.dense, f"{path}.dense")}


ATTENTION_LAYOUTS.register(
    "q_k_v_o", Layout(lambda m: _linears(m, "q_proj", "k_proj", "v_proj", "o_proj"), _separate_qkv)
)
ATTENTION_LAYOUTS.register("qkv_o", Layout(lambda m: _linears(m, "qkv_proj", "o_proj"), _fused_qkv))
ATTENTION_LAYOUTS.register(
    "neox",
    Layout(lambda m: type(m).__name__.startswith("GPTNeoX") and _linears(m, "query_key_value", "dense"), _neox_qkv),
)


def _gated(mlp: nn.Module, path: str, s: Shape) -> dict[str, Any]:
    return {n: Rows(getattr(mlp, f"{n}_proj"), f"{path}.{n}_proj") for n in ("gate", "up", "down")}


def _fused_gate_up(mlp: nn.Module, path: str, s: Shape) -> dict[str, Any]:
    """Phi-3: one `gate_up_proj` whose output is [gate | up] (chunk(2) in its forward)."""
    fused, name = mlp.gate_up_proj, f"{path}.gate_up_proj"
    half = fused.out_features // 2
    return {
        "gate": Rows(fused, name, _rows(0, half)),
        "up": Rows(fused, name, _rows(half, 2 * half)),
        "down": Rows(mlp.down_proj, f"{path}.down_proj"),
    }


def _plain(up: str, down: str) -> Layout:
    def split(mlp: nn.Module, path: str, s: Shape) -> dict[str, Any]:
        return {"up": Rows(getattr(mlp, up), f"{path}.{up}"), "down": Rows(getattr(mlp, down), f"{path}.{down}")}

    return Layout(lambda m: _linears(m, up, down) and not hasattr(m, "gate_proj"), split)


MLP_LAYOUTS.register("gate_up_down", Layout(lambda m: _linears(m, "gate_proj", "up_proj", "down_proj"), _gated))
MLP_LAYOUTS.register("gate_up_fused", Layout(lambda m: _linears(m, "gate_up_proj", "down_proj"), _fused_gate_up))
MLP_LAYOUTS.register("neox", _plain("dense_h_to_4h", "dense_4h_to_h"))
MLP_LAYOUTS.register("fc1_fc2", _plain("fc1", "fc2"))
MLP_LAYOUTS.register("up_down", _plain("up_proj", "down_proj"))


def text_config(model: nn.Module) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def shape_of(model: nn.Module) -> Shape:
    """Heads, KV heads and head_dim from the config (head_dim may differ from hidden / heads)."""
    c = text_config(model)
    heads = c.num_attention_heads
    return Shape(
        hidden=c.hidden_size,
        heads=heads,
        kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
        intermediate=getattr(c, "intermediate_size", None),
    )


def sliding_window(config: Any, index: int) -> int | None:
    """The attention window of layer `index` (None: full causal), as the model's masks build it."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return window if types[index] == "sliding_attention" else None
    return window if getattr(config, "use_sliding_window", True) else None


def partial_rotary_factor(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0))


def rotary_embedding(model: nn.Module) -> nn.Module | None:
    """The model's rotary embedding module (the one holding `inv_freq`), or None."""
    return next((m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)), None)


def _child(module: nn.Module, attrs: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    return next(((a, getattr(module, a)) for a in attrs if isinstance(getattr(module, a, None), nn.Module)), None)


def _describe(module: nn.Module) -> str:
    linears = [n for n, m in module.named_children() if isinstance(m, nn.Linear)]
    return f"{type(module).__name__} (linears: {', '.join(linears) or 'none'})"


def _layout(registry: Registry[Layout], module: nn.Module, path: str, s: Shape) -> tuple[str, dict[str, Any]]:
    for name in registry.names():
        layout = registry.get(name)
        if layout.match(module):
            return name, layout.split(module, path, s)
    where = "ATTENTION_LAYOUTS" if registry is ATTENTION_LAYOUTS else "MLP_LAYOUTS"
    raise UnknownLayout(
        f"{_describe(module)} matches no {registry.kind} ({', '.join(registry.names())}); "
        f"register one in pytest_attnlab.models.anatomy.{where}"
    )


def _unmodelled(module: nn.Module, parts: dict[str, Any]) -> list[str]:
    """Children with parameters that are none of the parts (q/k norms, ...)."""
    used = {r.name.rsplit(".", 1)[-1] for r in parts.values() if isinstance(r, Rows)}
    return sorted(n for n, m in module.named_children() if n not in used and any(True for _ in m.parameters()))


def _parts(
    registry: Registry[Layout], layer: nn.Module, attrs: tuple[str, ...], s: Shape
) -> tuple[nn.Module | None, str, dict[str, Any] | str]:
    """(module, layout name, parts) of the first child named in `attrs`; parts is the reason on a miss."""
    found = _child(layer, attrs)
    if found is None:
        return None, "", f"{type(layer).__name__} has no {registry.kind.split()[0]} module ({', '.join(attrs)})"
    path, module = found
    try:
        name, parts = _layout(registry, module, path, s)
    except UnknownLayout as exc:
        return module, "", str(exc)
    return module, name, parts


def _layer(index: int, layer: nn.Module, s: Shape, config: Any) -> Layer:
    out = Layer(index, layer, None, None, {}, sliding_window(config, index))
    attn, layout, parts = _parts(ATTENTION_LAYOUTS, layer, ATTENTION_ATTRS, s)
    if isinstance(parts, str):
        out.problems["attention"] = parts
    else:
        out.attention = Attention(attn, layout, **parts, unmodelled=_unmodelled(attn, parts))  # type: ignore[arg-type]
    mlp, layout, parts = _parts(MLP_LAYOUTS, layer, MLP_ATTRS, s)
    if isinstance(parts, str):
        out.problems["mlp"] = parts
    else:
        out.mlp = MLP(mlp, layout, **parts)  # type: ignore[arg-type]
    inside = {id(m) for m in attn.modules()} if attn is not None else set()  # q/k norms: the attention's
    unknown = []
    for name, module in layer.named_modules():
        if not name or id(module) in inside:
            continue
        if norm_kind(module) is not None:
            out.norms[name] = module
        elif "norm" in type(module).__name__.lower():
            unknown.append(f"{name} ({type(module).__name__})")
    if unknown:
        out.problems["norms"] = (
            f"no formula for {', '.join(unknown)}; register one in pytest_attnlab.formulas.NORM_KINDS"
        )
    return out


def anatomy(model: nn.Module) -> Anatomy:
    """The parts of every decoder layer of a HF causal LM (layers whose layout is unknown carry the
    reason in `Layer.problems`; `Anatomy.attention(i)` / `.mlp(i)` raise it as UnknownLayout)."""
    config = text_config(model)
    s = shape_of(model)
    layers = [_layer(i, layer, s, config) for i, layer in enumerate(decoder_layers(model))]
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is not None and out.weight is inp.weight
    return Anatomy(model, s, layers, rotary_embedding(model), int(s.head_dim * partial_rotary_factor(config)), tied)


def attention_traits(model: nn.Module) -> dict[str, str]:
    """What the model's attention does beyond softmax(q k^T * scaling) v with RoPE on whole heads over
    every position: trait -> what and where. A conversion that rebuilds the attention refuses, naming
    them, the traits it does not reproduce, instead of building a different model."""
    config, parts = text_config(model), anatomy(model)
    traits = {}
    extra = {n: type(x.attention.module).__name__ for x in parts.layers if x.attention for n in x.attention.unmodelled}
    if extra:
        owner = ", ".join(sorted(set(extra.values())))
        traits["extra parts"] = f"{owner} also applies {', '.join(sorted(extra))} (per-head q/k norms or similar)"
    longest = getattr(config, "max_position_embeddings", None) or float("inf")
    windows = {x.index: x.sliding_window for x in parts.layers if x.sliding_window and x.sliding_window < longest}
    if windows:
        sizes = ", ".join(sorted({str(w) for w in windows.values()}))
        where = (
            f"layers {', '.join(map(str, windows))} attend"
            if len(windows) > 1
            else f"layer {next(iter(windows))} attends"
        )
        traits["sliding window"] = f"{where} over the last {sizes} tokens"
    cap = getattr(config, "attn_logit_softcapping", None)
    if cap:
        traits["softcap"] = f"attention logits soft-capped at {cap:g}"
    if parts.rotary_dim != parts.shape.head_dim:
        traits["partial rotary"] = f"RoPE turns {parts.rotary_dim} of {parts.shape.head_dim} head dims"
    return traits


def supports_sdpa(model_class: type) -> bool:
    """Whether transformers can run this model class with SDPA attention (`_supports_sdpa`)."""
    return bool(getattr(model_class, "_supports_sdpa", False))


def looks_untrained(model: nn.Module, tolerance: float = 0.05) -> bool:
    """True when every decoder linear weight has the standard deviation of transformers' random init
    (config.initializer_range, within `tolerance`): a checkpoint saved right after from_config.
    Training moves every matrix away from it, so bounds meant for trained models do not apply."""
    init = getattr(text_config(model), "initializer_range", None)
    if not init:
        return False
    weights = [m.weight for layer in decoder_layers(model) for m in layer.modules() if isinstance(m, nn.Linear)]
    return bool(weights) and all(abs(float(w.detach().float().std()) / init - 1.0) < tolerance for w in weights)
