"""Causal linear attention (Katharopoulos et al. 2020): softmax(q.k) replaced by phi(q).phi(k).

out_i = phi(q_i) S_i / phi(q_i) z_i with S_i = sum_{j<=i} phi(k_j) v_j^T and z_i = sum_{j<=i} phi(k_j).
Three forms compute the same thing: parallel (a masked [q, k] matrix, O(T^2)), chunked (parallel
inside a chunk, the running state across chunks) and recurrent (one token at a time, O(1) state:
the decode form). Feature maps: elu+1, and Hedgehog's softmax map [softmax(x), softmax(-x)]
(Zhang et al. 2024) with its projection left at the identity, i.e. untrained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pytest_attnlab.attention.base import KernelVariant, KVCacheInfo, attention_modules, model_shape
from pytest_attnlab.attention.variants.dense import as_attention, repeat_kv
from pytest_attnlab.registry import Registry

FeatureMap = Callable[[torch.Tensor], torch.Tensor]
EPS = 1e-6


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def hedgehog(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.softmax(x, dim=-1), torch.softmax(-x, dim=-1)], dim=-1)


#: feature map name -> (map, features per head dim)
FEATURE_MAPS: Registry[tuple[FeatureMap, int]] = Registry("linear-attention feature map")
FEATURE_MAPS.register("elu", (elu_plus_one, 1))
FEATURE_MAPS.register("hedgehog", (hedgehog, 2))


@dataclass
class State:
    """Running sums after `length` tokens: s [b, h, f, d_v], z [b, h, f]."""

    s: torch.Tensor
    z: torch.Tensor
    length: int

    @property
    def nbytes(self) -> int:
        return self.s.numel() * self.s.element_size() + self.z.numel() * self.z.element_size()


def empty_state(fq: torch.Tensor, v: torch.Tensor) -> State:
    b, h, _, f = fq.shape
    return State(fq.new_zeros(b, h, f, v.shape[-1]), fq.new_zeros(b, h, f), 0)


def parallel(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, state: State | None = None
) -> tuple[torch.Tensor, State]:
    """Feature-mapped inputs [b, h, t, f] (v: [b, h, t, d]) -> (out [b, h, t, d], the new state)."""
    state = state or empty_state(fq, v)
    t = fq.shape[2]
    a = (fq @ fk.transpose(-1, -2)).tril()
    num = a @ v + fq @ state.s
    den = a.sum(-1) + (fq * state.z[:, :, None, :]).sum(-1)
    new = State(state.s + fk.transpose(-1, -2) @ v, state.z + fk.sum(2), state.length + t)
    return num / (den[..., None] + EPS), new


def chunked(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, state: State | None = None, chunk: int = 64
) -> tuple[torch.Tensor, State]:
    """Parallel within chunks of `chunk` tokens, carrying the state across them: O(T * chunk)."""
    state = state or empty_state(fq, v)
    outs = []
    for i in range(0, fq.shape[2], chunk):
        out, state = parallel(fq[:, :, i : i + chunk], fk[:, :, i : i + chunk], v[:, :, i : i + chunk], state)
        outs.append(out)
    return torch.cat(outs, dim=2), state


def recurrent(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, state: State | None = None
) -> tuple[torch.Tensor, State]:
    """One token at a time: the state is all that is kept between tokens (decode)."""
    state = state or empty_state(fq, v)
    s, z, outs = state.s, state.z, []
    for t in range(fq.shape[2]):
        k_t, v_t, q_t = fk[:, :, t], v[:, :, t], fq[:, :, t]
        s = s + k_t[..., :, None] * v_t[..., None, :]
        z = z + k_t
        num = (q_t[..., None, :] @ s).squeeze(-2)
        outs.append(num / ((q_t * z).sum(-1, keepdim=True) + EPS))
    return torch.stack(outs, dim=2), State(s, z, state.length + fq.shape[2])


FORMS: Registry[Callable[..., tuple[torch.Tensor, State]]] = Registry("linear-attention form")
FORMS.register("parallel", parallel)
FORMS.register("chunked", chunked)
FORMS.register("recurrent", recurrent)


def linear_attention(feature: str = "elu", form: str = "chunked", chunk: int = 64) -> KernelVariant:
    """`linear_attention("elu")` -> `linear_elu`; other forms add a suffix (`linear_elu_recurrent`).

    With a normal KV cache the function recomputes from all cached keys. With `LinearStateCache`
    only the new tokens arrive; the running state then lives on the attention module (reset when a
    sequence starts at position 0), which makes decode memory independent of the context length.
    """
    fmap, _ = FEATURE_MAPS.get(feature)
    run = FORMS.get(form)
    name = f"linear_{feature}" + ("" if form == "chunked" else f"_{form}")
    extra = {"chunk": chunk} if form == "chunked" else {}

    def attend(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Any, scaling: Any, **kw) -> Tensor:
        position_ids = kw.get("position_ids")
        heads, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
        fq = fmap(query.float())
        fk = fmap(repeat_kv(key, heads).float())
        v = repeat_kv(value, heads).float()
        start = int(position_ids[0, 0]) if position_ids is not None else 0
        prior = module.__dict__.get("_attnlab_state")
        if k_len == q_len and start > 0:  # only new tokens arrived: continue the stored state
            if prior is None or prior.length != start:
                raise RuntimeError(
                    f"{name}: tokens start at position {start} but the stored state covers "
                    f"{0 if prior is None else prior.length}; decode with LinearStateCache from position 0"
                )
            out, state = run(fq, fk, v, prior, **extra)
        else:  # a full KV cache: fold the cached prefix into a state, then run the new queries
            p = k_len - q_len
            prefix = State(fk[:, :, :p].transpose(-1, -2) @ v[:, :, :p], fk[:, :, :p].sum(2), p) if p else None
            out, state = run(fq, fk[:, :, p:], v[:, :, p:], prefix, **extra)
        module.__dict__["_attnlab_state"] = state
        return out.to(query.dtype).transpose(1, 2).contiguous()

    def kv(model: nn.Module) -> KVCacheInfo:
        s = model_shape(model)
        _, mult = FEATURE_MAPS.get(feature)
        f = mult * s["head_dim"]
        per_layer = s["heads"] * (f * s["head_dim"] + f) * 4  # float32 state
        return KVCacheInfo(0, state_bytes=per_layer * s["layers"], note="with LinearStateCache")

    params = {"feature": feature, "form": form, **extra}
    return KernelVariant(name, fn=as_attention(name, attend), mask=None, kv=kv, params=params)


def linear_state_cache(config: Any = None) -> Any:
    """A transformers Cache that stores no keys or values, only counts tokens (positions stay right)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class CountingLayer(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.seen = 0

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.seen += key_states.shape[-2]
            return key_states, value_states

        def get_seq_length(self) -> int:
            return getattr(self, "seen", 0) if self.is_initialized else 0

    cache = DynamicCache()
    cache.layer_class_to_replicate = CountingLayer
    return cache


def state_bytes(model: nn.Module) -> int:
    """Bytes of the linear-attention state currently held by the model's attention modules."""
    return sum(
        m.__dict__["_attnlab_state"].nbytes for _, _, m in attention_modules(model) if "_attnlab_state" in m.__dict__
    )
