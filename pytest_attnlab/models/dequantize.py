"""Reading GPTQ, AWQ and compressed-tensors checkpoints into float weights, with no quantization library.

A pre-quantized folder stores integer codes, scales and zero points per linear; the weights any
runtime computes with are w = s * (q - z) per group. Where the format's own library is missing
(gptqmodel for GPTQ and AWQ on CPU) or fails (transformers cannot load asymmetric compressed-tensors
zero points), these readers give those weights exactly, so the candidate comparison measures the
checkpoint, not a kernel. Layouts are the ones `quant.export` writes and its tests check against
the formats' own readers:

  gptq                 qweight [in*b/32, out] packed along in; qzeros [groups, out*b/32] (zero - 1 in v1);
                       scales [groups, out]; g_idx must be contiguous (no act-order)
  awq (GEMM)           qweight [in, out/8] and qzeros [groups, out/8] in AWQ's nibble order; scales [groups, out]
  compressed-tensors   pack-quantized: weight_packed [out, in*b/32]; weight_scale [out, groups];
                       weight_zero_point [out*b/32, groups] (absent: symmetric, zero at 2**(b-1))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pytest_attnlab.quant.export.packing import awq_unpermute, unpack_int32
from pytest_attnlab.registry import Registry

Reader = Callable[[dict[str, torch.Tensor], dict[str, Any]], dict[str, torch.Tensor]]
#: quant_method -> reader of its tensors (prefix.<packed parts> -> prefix.weight, others unchanged)
READERS: Registry[Reader] = Registry("checkpoint reader")


class UnreadableCheckpoint(ValueError):
    """The folder uses a variant of its format these readers do not implement; the message says which."""


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """w[o, i] = scales[o, g] * (codes[o, i] - zeros[o, g]), g = i // (in / groups); float32 [out, in]."""
    group = codes.shape[1] // scales.shape[1]
    z = zeros.float().repeat_interleave(group, dim=1)
    s = scales.float().repeat_interleave(group, dim=1)
    return (codes.float() - z) * s


def _prefixes(tensors: dict[str, torch.Tensor], suffix: str) -> list[str]:
    return sorted(k.removesuffix(suffix) for k in tensors if k.endswith(suffix))


def _replace(tensors: dict[str, torch.Tensor], prefix: str, parts: tuple[str, ...], weight: torch.Tensor) -> None:
    for part in parts:
        tensors.pop(f"{prefix}.{part}", None)
    tensors[f"{prefix}.weight"] = weight


def read_gptq(tensors: dict[str, torch.Tensor], qcfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    bits = int(qcfg.get("bits", 4))
    if qcfg.get("desc_act"):
        raise UnreadableCheckpoint("GPTQ with act-order (desc_act) is not read here: load it with gptqmodel")
    v1 = qcfg.get("checkpoint_format", "gptq") == "gptq"
    out = dict(tensors)
    for prefix in _prefixes(tensors, ".qweight"):
        p = {k: tensors[f"{prefix}.{k}"] for k in ("qweight", "qzeros", "scales") if f"{prefix}.{k}" in tensors}
        codes = unpack_int32(p["qweight"], bits, dim=0).t()  # [out, in]
        zeros = unpack_int32(p["qzeros"], bits, dim=1).t()[: codes.shape[0]] + (1 if v1 else 0)
        g_idx = tensors.get(f"{prefix}.g_idx")
        group = codes.shape[1] // p["scales"].shape[0]
        if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(codes.shape[1]) // group):
            raise UnreadableCheckpoint(f"{prefix}: g_idx is not contiguous (act-order); load it with gptqmodel")
        weight = dequantize(codes, p["scales"].t()[: codes.shape[0]], zeros)
        _replace(out, prefix, ("qweight", "qzeros", "scales", "g_idx"), weight)
    return out


def read_awq(tensors: dict[str, torch.Tensor], qcfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    bits = int(qcfg.get("bits", qcfg.get("w_bit", 4)))
    version = str(qcfg.get("version", "gemm")).lower()
    if bits != 4 or version != "gemm":
        raise UnreadableCheckpoint(
            f"AWQ {bits}-bit {version!r} is not read here (4-bit GEMM only): load it with gptqmodel"
        )
    out = dict(tensors)
    for prefix in _prefixes(tensors, ".qweight"):
        codes = awq_unpermute(unpack_int32(tensors[f"{prefix}.qweight"], 4, dim=1)).t()  # [out, in]
        zeros = awq_unpermute(unpack_int32(tensors[f"{prefix}.qzeros"], 4, dim=1)).t()
        weight = dequantize(codes, tensors[f"{prefix}.scales"].t(), zeros)
        _replace(out, prefix, ("qweight", "qzeros", "scales"), weight)
    return out


def read_compressed_tensors(tensors: dict[str, torch.Tensor], qcfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    groups = list((qcfg.get("config_groups") or {}).values())
    formats = {g.get("format") or qcfg.get("format") for g in groups}
    bits = {int((g.get("weights") or {}).get("num_bits", 0)) for g in groups}
    if formats != {"pack-quantized"} or len(bits) != 1:
        raise UnreadableCheckpoint(
            f"compressed-tensors format {sorted(map(str, formats))} with weight bits {sorted(bits)} is not read here "
            "(pack-quantized int4/int8 only): install compressed-tensors so transformers loads it"
        )
    (b,) = bits
    out = dict(tensors)
    for prefix in _prefixes(tensors, ".weight_packed"):
        codes = unpack_int32(tensors[f"{prefix}.weight_packed"], b, dim=1)
        shape = tensors.get(f"{prefix}.weight_shape")
        if shape is not None:
            codes = codes[: int(shape[0]), : int(shape[1])]
        scales = tensors[f"{prefix}.weight_scale"]
        zp = tensors.get(f"{prefix}.weight_zero_point")
        zeros = (
            torch.full_like(scales, 2 ** (b - 1), dtype=torch.int32)
            if zp is None
            else unpack_int32(zp, b, dim=0)[: codes.shape[0]]
        )
        weight = dequantize(codes, scales, zeros)
        _replace(out, prefix, ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape"), weight)
    return out


READERS.register("gptq", read_gptq)
READERS.register("awq", read_awq)
READERS.register("compressed-tensors", read_compressed_tensors)


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise UnreadableCheckpoint(f"{folder} holds no *.safetensors file")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


#: float tensors that are quantization parameters: counted as stored, not at the run's dtype
QUANT_PARAMS = (".scales", ".weight_scale")


def stored_bytes(tensors: dict[str, torch.Tensor], float_dtype: torch.dtype) -> int:
    """What the checkpoint's weights take when run at `float_dtype`: float weights at that dtype,
    integer codes and quantization scales as stored."""
    size = torch.empty((), dtype=float_dtype).element_size()
    total = 0
    for name, t in tensors.items():
        at_run_dtype = t.is_floating_point() and not name.endswith(QUANT_PARAMS)
        total += t.numel() * (size if at_run_dtype else t.element_size())
    return total
