"""The planted bugs of quant.mutants: named functions that edit a model's weights, norms or positions
in place (`Bug`), or a linear's integer codes, scales or zero points before dequantization
(`CodeBug`), each on the layers and projections it is given (fused projections edited block by
block through models.anatomy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pytest_attnlab.models.anatomy import Rows, UnknownLayout, anatomy
from pytest_attnlab.models.anatomy import rotary_embedding as find_rotary
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.quant import grid as G
from pytest_attnlab.quant.layers import target_linears

Bug = Callable[[nn.Module], None]
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: projection name -> (part, role) in models.anatomy: the rows that play it, in a fused linear too
ROLES = {
    "q_proj": ("attention", "q"),
    "k_proj": ("attention", "k"),
    "v_proj": ("attention", "v"),
    "o_proj": ("attention", "o"),
    "gate_proj": ("mlp", "gate"),
    "up_proj": ("mlp", "up"),
    "down_proj": ("mlp", "down"),
}


class NotApplicable(ValueError):
    """This bug cannot be planted in this model (no such projection, no rotary embedding, ...)."""


#: a bug in the integer step: (model, linear, its codes/scales/zeros) -> what gets dequantized
CodeBug = Callable[[nn.Module, nn.Linear, G.QTensor], G.QTensor]


def _named(name: str, fn: Bug) -> Bug:
    fn.__name__ = name
    return fn


def selected_linears(
    model: nn.Module, layers: Sequence[int] | None = None, projections: Sequence[str] | None = None
) -> list[nn.Linear]:
    """The decoder linears of `layers` (indices, negative from the end; None: all) named `projections`."""
    stack = decoder_layers(model)
    wanted = None if layers is None else {i % len(stack) for i in layers}
    out = []
    for index, layer in enumerate(stack):
        if wanted is not None and index not in wanted:
            continue
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear) and (projections is None or name.rsplit(".", 1)[-1] in projections):
                out.append(module)
    if not out:
        raise NotApplicable(f"no decoder linear matches layers={layers}, projections={projections}")
    return out


def selected_rows(
    model: nn.Module, layers: Sequence[int] | None = None, projections: Sequence[str] | None = None
) -> list[Any]:
    """The weight rows (models.anatomy.Rows) playing `projections` (q_proj, gate_proj, ...) in `layers`:
    a whole linear, or its block of a fused one (Phi-3's qkv_proj, GPT-NeoX's query_key_value).
    None: every decoder linear, whole."""
    if projections is None:
        return [Rows(linear, "") for linear in selected_linears(model, layers)]
    parts = anatomy(model)
    wanted = range(len(parts.layers)) if layers is None else sorted({i % len(parts.layers) for i in layers})
    out, missing = [], []
    for index in wanted:
        for projection in projections:
            part, role = ROLES[projection]
            try:
                rows = getattr(parts.attention(index) if part == "attention" else parts.mlp(index), role)
            except UnknownLayout as exc:
                raise NotApplicable(str(exc)) from None
            if rows is None:
                missing.append(f"{projection} (layer {index}: a plain MLP has no gate)")
            else:
                out.append(rows)
    if not out:
        raise NotApplicable(f"no {', '.join(projections)} in layers {list(wanted)}: {'; '.join(missing[:2])}")
    return out


def edit_rows(rows: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace the rows' weights by fn(weights) in place (a fused linear's other rows untouched)."""
    w = rows.linear.weight
    if rows.index is None:
        w.copy_(fn(w))
    else:
        index = rows.index.to(w.device)
        w[index] = fn(w[index])


def scale_linears(factor: float, layers: Sequence[int] | None = None, projections: Sequence[str] | None = None) -> Bug:
    """Multiply the chosen weights by `factor` (a scale folded twice, a wrong dequantization scale)."""

    def bug(model: nn.Module) -> None:
        for rows in selected_rows(model, layers, projections):
            edit_rows(rows, lambda w: w * factor)

    return _named(f"scale x{factor}", bug)


def noise_linears(
    fraction: float, layers: Sequence[int] | None = None, projections: Sequence[str] | None = None, seed: int = 0
) -> Bug:
    """Add Gaussian noise of `fraction` x each weight matrix's standard deviation (garbage low bits)."""

    def bug(model: nn.Module) -> None:
        gen = torch.Generator().manual_seed(seed)

        def noisy(w: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(w.shape, generator=gen, dtype=torch.float32) * float(w.float().std()) * fraction
            return w + noise.to(w.device, w.dtype)

        for rows in selected_rows(model, layers, projections):
            edit_rows(rows, noisy)

    return _named(f"noise {fraction:.0%} of weight std", bug)


def swap_column_pairs(layers: Sequence[int] | None = None, projections: Sequence[str] | None = None) -> Bug:
    """Read each pair of input columns in swapped order (the two 4-bit codes of a byte unpacked backwards)."""

    def bug(model: nn.Module) -> None:
        for rows in selected_rows(model, layers, projections):
            edit_rows(rows, lambda w: w.reshape(w.shape[0], -1, 2).flip(2).reshape(w.shape))

    return _named("input column pairs swapped", bug)


def round_to_bits(bits: int) -> Bug:
    """Re-round every decoder weight on a symmetric per-channel `bits`-bit grid (int6 inside "int8")."""
    maxq = 2 ** (bits - 1) - 1

    def bug(model: nn.Module) -> None:
        for linear in target_linears(model).values():
            w = linear.weight.float()
            scale = (w.abs().amax(dim=1, keepdim=True) / maxq).clamp(min=1e-8)
            linear.weight.copy_((torch.round(w / scale).clamp(-maxq, maxq) * scale).to(linear.weight.dtype))

    return _named(f"int{bits} rounding", bug)


def roll_query_heads(layers: Sequence[int] | None = None) -> Bug:
    """Rotate q_proj's output rows by one head (a head-order bug in packing or a reshape)."""

    def bug(model: nn.Module) -> None:
        head_dim = _head_dim(model)
        for rows in selected_rows(model, layers, ("q_proj",)):
            edit_rows(rows, lambda w: torch.roll(w, head_dim, dims=0))
            bias = rows.linear.bias
            if bias is not None:
                index = torch.arange(bias.shape[0]) if rows.index is None else rows.index
                bias[index] = torch.roll(bias[index], head_dim, dims=0)

    return _named("query heads rolled by one", bug)


def rope_base(factor: float) -> Bug:
    """Rebuild the rotary frequencies with base `factor` x the config's rope_theta (a default base
    used instead of the checkpoint's: SmolLM2's 100000 read as Llama's 10000 is factor 0.1)."""

    def bug(model: nn.Module) -> None:
        rotary = rotary_embedding(model)
        theta = _theta(model) * factor
        dim = rotary.inv_freq.numel() * 2
        exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=rotary.inv_freq.device) / dim
        rotary.inv_freq.copy_(1.0 / (theta**exponents))

    return _named(f"RoPE base x{factor:g}", bug)


def positions_off_by_one() -> Bug:
    """Position ids 0, 0, 1, 2, ... (an off-by-one that gives the first two tokens one position)."""

    def shift(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "position_ids" in kwargs:
            return args, {**kwargs, "position_ids": (kwargs["position_ids"] - 1).clamp(min=0)}
        return (args[0], (args[1] - 1).clamp(min=0), *args[2:]), kwargs

    def bug(model: nn.Module) -> None:
        rotary_embedding(model).register_forward_pre_hook(shift, with_kwargs=True)

    return _named("positions off by one", bug)


def norm_weight_offset(offset: float, which: str = "input_layernorm") -> Bug:
    """Add `offset` to every decoder layer's `which` RMSNorm weight (Gemma's 1 + w applied to Llama)."""

    def bug(model: nn.Module) -> None:
        for layer in decoder_layers(model):
            weight = getattr(getattr(layer, which, None), "weight", None)
            if weight is None:
                raise NotApplicable(f"{type(layer).__name__}.{which} has no weight to offset")
            weight.add_(offset)

    return _named(f"{which} weight + {offset:g}", bug)


def norm_epsilon(eps: float) -> Bug:
    """Set every decoder RMSNorm's epsilon to `eps` (another model's rms_norm_eps)."""

    def bug(model: nn.Module) -> None:
        changed = 0
        for layer in decoder_layers(model):
            for module in layer.modules():
                for attr in ("variance_epsilon", "eps"):  # RMSNorm's, or LayerNorm's and Gemma's
                    if isinstance(getattr(module, attr, None), float):
                        setattr(module, attr, eps)
                        changed += 1
        if not changed:
            raise NotApplicable("no decoder norm keeps its epsilon in an attribute (variance_epsilon or eps)")

    return _named(f"RMSNorm eps {eps:g}", bug)


def zero_points_shifted(shift: int, layers: Sequence[int], projections: Sequence[str]) -> CodeBug:
    """Zero points + `shift` in `projections` of `layers` (a zero point read off by one, as from a
    checkpoint that stores zero - 1, or zeros of another layer): every weight there moves by `shift`
    scale steps."""

    def code_bug(model: nn.Module, linear: nn.Linear, qt: G.QTensor) -> G.QTensor:
        if qt.zeros is None:
            raise NotApplicable("a symmetric grid stores no zero points")
        if not any(linear is chosen for chosen in selected_linears(model, layers, list(projections))):
            return qt
        return G.QTensor(qt.codes, qt.scales, (qt.zeros + shift).clamp(0, 15))

    return code_bug  # type: ignore[return-value]


def in_middle(make: Callable[[list[int]], CodeBug], description: str) -> CodeBug:
    """A code bug `make([k])` at k = the middle decoder layer of whichever model it is given."""

    def code_bug(model: nn.Module, linear: nn.Linear, qt: G.QTensor) -> G.QTensor:
        return make([len(decoder_layers(model)) // 2])(model, linear, qt)

    code_bug.__name__ = description
    return code_bug


def rotary_embedding(model: nn.Module) -> nn.Module:
    """The model's rotary embedding module (the one holding `inv_freq`)."""
    found = find_rotary(model)
    if found is None:
        raise NotApplicable(f"{type(model).__name__} has no rotary embedding (no module holds inv_freq)")
    return found


def _theta(model: nn.Module) -> float:
    config = model.config
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def in_middle_layer(make: Callable[[list[int]], Bug], description: str) -> Bug:
    """`make([k])` applied at k = the middle decoder layer of whichever model it is given."""

    def bug(model: nn.Module) -> None:
        make([len(decoder_layers(model)) // 2])(model)

    return _named(description, bug)


def _head_dim(model: nn.Module) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
