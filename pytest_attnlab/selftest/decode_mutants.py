"""Planted decode-time bugs: what a single batch-1 float32 prefill cannot see.

Each mutant plants one realistic bug into a loaded model in place and undoes it on exit
(`with mutant.planted(model): ...`); `killed_by` names the checks of the correctness suite that
exist to catch it (`decode_checks` functions and test_layer_diff's layer diff), and
suites/correctness/test_decode_gate_kill.py runs them and fails on a survivor. `DECODE_MUTANTS` is
in `registry.REGISTRIES` (key "decode_mutants"), so a conftest.py adds one like a built-in:

    def pytest_attnlab_register(registries, config):
        registries["decode_mutants"].register("mine", DecodeMutant("mine", "...", plant, ("cache",)))

The quantizer bugs are `quant.mutants.MUTANTS` (a separate registry, the same idea).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from pytest_attnlab.models.anatomy import rotary_embedding as find_rotary
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.registry import Registry

Undo = Callable[[], None]


class NotApplicable(ValueError):
    """This bug cannot be planted in this model (no rotary embedding, no q/k/v bias, ...)."""


@dataclass(frozen=True)
class DecodeMutant:
    """One planted bug: `plant(model)` edits the model in place and returns the undo."""

    name: str
    description: str
    plant: Callable[[nn.Module], Undo]
    killed_by: tuple[str, ...]  # names in test_decode_gate_kill's CHECKS
    dtype: torch.dtype | None = None  # the dtype the bug lives in (None: any)
    needs_bias: bool = False  # planted in a model with q/k/v biases (random:tiny-qwen2 when the model has none)
    #: the same bug in a float32 model, free of the half dtype's rounding: its true size on this model
    #: (None: `plant` itself, a bug that does not depend on the dtype)
    float32_form: Callable[[nn.Module], Undo] | None = None

    def in_float32(self) -> DecodeMutant:
        """This bug as planted into a float32 model, to measure its own size (test_decode_gate_kill)."""
        return replace(self, plant=self.float32_form or self.plant, dtype=None)

    @contextmanager
    def planted(self, model: nn.Module) -> Iterator[nn.Module]:
        undo = self.plant(model)
        try:
            yield model
        finally:
            undo()


def rotary_embedding(model: nn.Module) -> nn.Module:
    found = find_rotary(model)
    if found is None:
        raise NotApplicable(f"{type(model).__name__} has no rotary embedding (no module holds inv_freq)")
    return found


def _position_ids(args: tuple, kwargs: dict) -> torch.Tensor:
    return kwargs["position_ids"] if "position_ids" in kwargs else args[1]


def decode_position_off_by_one(model: nn.Module) -> Undo:
    """Each decode step's token is rotated as position cache length + 1 instead of its index (the
    count of tokens including itself used as its position); the prefill is untouched."""

    def shift(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        positions = _position_ids(args, kwargs)
        if positions.shape[-1] != 1:  # prefill: correct
            return None
        if "position_ids" in kwargs:
            return args, {**kwargs, "position_ids": positions + 1}
        return (args[0], positions + 1, *args[2:]), kwargs

    return rotary_embedding(model).register_forward_pre_hook(shift, with_kwargs=True).remove


def pad_mask_off_by_one(model: nn.Module) -> Undo:
    """A left-padded row attends to its last pad token (the pad count off by one when the mask is
    built); rows without padding, and so every batch-1 run, are untouched."""

    def unmask(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        mask = kwargs.get("attention_mask")
        if mask is None or mask.dim() != 2 or bool(mask.all()):
            return None
        first = mask.int().argmax(dim=1)  # the first real token of each row
        mask = mask.clone()
        rows = torch.nonzero(first > 0).flatten()
        mask[rows, first[rows] - 1] = 1
        return args, {**kwargs, "attention_mask": mask}

    return model.get_decoder().register_forward_pre_hook(unmask, with_kwargs=True).remove


def rope_angles_in_activation_dtype(model: nn.Module, angle_dtype: torch.dtype | None = None) -> Undo:
    """The RoPE angles position x inv_freq and their cos/sin computed in the activations' dtype, not
    float32 (the missing upcast of transformers' RotaryEmbedding): bit-identical in float32; in bfloat16
    an angle of 50 rad is off by up to 0.1 rad. `angle_dtype` forces the angles' dtype (bfloat16 angles
    in a float32 model: the bug's own size, without bfloat16's rounding elsewhere)."""
    rotary = rotary_embedding(model)

    def angles(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = args[0] if args else kwargs["x"]
        dtype = angle_dtype or x.dtype
        positions = _position_ids(args, kwargs)
        freqs = positions[..., None].to(dtype) * module.inv_freq.to(x.device, dtype)
        emb = torch.cat((freqs, freqs), dim=-1)
        scaling = getattr(module, "attention_scaling", 1.0)
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

    return rotary.register_forward_hook(angles, with_kwargs=True).remove


def rope_angles_in_bfloat16(model: nn.Module) -> Undo:
    """rope-angles-bf16's float32 form: the angles rounded to bfloat16, everything else float32."""
    return rope_angles_in_activation_dtype(model, torch.bfloat16)


def middle_layer_qkv_bias_dropped(model: nn.Module) -> Undo:
    """The middle decoder layer's q, k and v biases dropped (a converter that fuses q/k/v and keeps
    only the weights)."""
    layers = decoder_layers(model)
    layer = layers[len(layers) // 2]
    dropped = [
        (module, module.bias)
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear)
        and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj")
        and module.bias is not None
    ]
    if not dropped:
        raise NotApplicable(f"{type(layer).__name__} has no q/k/v bias")
    for module, _ in dropped:
        module.bias = None

    def undo() -> None:
        for module, bias in dropped:
            module.bias = bias

    return undo


def has_qkv_bias(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Linear) and m.bias is not None and n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj")
        for n, m in model.named_modules()
    )


DECODE_MUTANTS: Registry[DecodeMutant] = Registry("decode mutant")
for _mutant in (
    DecodeMutant(
        "decode-position-off-by-one",
        "decode steps rotated at cache length + 1",
        decode_position_off_by_one,
        ("cached_decode",),
    ),
    DecodeMutant(
        "pad-mask-off-by-one",
        "left-padded rows attend to their last pad token",
        pad_mask_off_by_one,
        ("padded_batch",),
    ),
    DecodeMutant(
        "rope-angles-bf16",
        "RoPE angles computed in bfloat16 (no float32 upcast)",
        rope_angles_in_activation_dtype,
        ("layer_diff",),
        dtype=torch.bfloat16,
        float32_form=rope_angles_in_bfloat16,
    ),
    DecodeMutant(
        "qkv-bias-dropped",
        "middle layer's q/k/v biases dropped",
        middle_layer_qkv_bias_dropped,
        ("layer_diff",),
        needs_bias=True,
    ),
):
    DECODE_MUTANTS.register(_mutant.name, _mutant)
