"""Roofline: bytes a decode step must read, FLOPs a prefill must do, and the device's peaks.

MBU % = bytes_per_decode_step / TPOT / peak_bandwidth * 100 (decode is memory bound);
MFU % = prefill_flops / TTFT / peak_flop_s * 100 (prefill is compute bound).
Peak bandwidth on NVIDIA comes from NVML (max memory clock x 2 (DDR) x bus width / 8) and is
cross-checked by a measured device copy; on CPU the measured copy is the peak. Peaks are measured
once per device and cached as JSON under `cache_root()/perf/`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_attnlab.models.cache import cache_root, locked
from pytest_attnlab.perf.timing import synchronize


# -- model side -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """The numbers of a decoder-only transformer that bytes and FLOPs depend on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False)),
        )

    def layer_linear_params(self) -> int:
        """q, k, v, o and gate, up, down weights of one layer (biases not counted)."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.intermediate

    def param_count(self) -> int:
        """Closed form of every parameter (tied embeddings counted once)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = self.layer_linear_params() + 2 * self.hidden + ((q + 2 * kv) if self.qkv_bias else 0)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden  # + final norm

    def kv_bytes_per_token(self, elem_bytes: int) -> int:
        """K and V of one token across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * elem_bytes

    def prefill_flops(self, batch: int, prompt_len: int) -> float:
        """Matmul FLOPs of a prefill: 2 x params x tokens for the layers, the LM head on the last
        position only (as HF generate's logits_to_keep=1), causal attention 2 x L^2 x d per head."""
        tokens = batch * prompt_len
        linear = 2.0 * self.layers * self.layer_linear_params() * tokens
        head = 2.0 * self.vocab * self.hidden * batch
        attention = 2.0 * batch * self.layers * self.heads * self.head_dim * prompt_len**2
        return linear + head + attention


def unique_param_bytes(model: Any) -> int:
    """Bytes of the model's parameters, each storage once (tied or view-shared weights count once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        storage = p.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def weight_bytes_per_step(model: Any, shape: Shape, batch: int, elem_bytes: int) -> int:
    """Weight bytes one decode step reads: every weight, except that an untied input embedding
    table is only gathered (batch rows), not read whole."""
    total = unique_param_bytes(model)
    if not shape.tied:
        total -= shape.vocab * shape.hidden * elem_bytes
        total += batch * shape.hidden * elem_bytes
    return total


def mean_decode_context(prompt_len: int, new_tokens: int) -> float:
    """Mean number of cached positions a decode step attends to: step j (j = 1..n-1) feeds
    generated token j and attends to prompt_len + j positions; the mean is prompt_len + n / 2."""
    return prompt_len + new_tokens / 2.0


def decode_step_bytes(weight_bytes: int, shape: Shape, batch: int, context: float, elem_bytes: int) -> float:
    """Weights once plus every sequence's KV cache over `context` positions."""
    return weight_bytes + batch * context * shape.kv_bytes_per_token(elem_bytes)


# -- device side ------------------------------------------------------------------------------
#: bf16 dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched on the device name.
KNOWN_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H200", 989.4),
    (r"H100.*(SXM|HBM3)", 989.4),
    (r"H100.*NVL", 835.0),
    (r"H100.*PCIe", 756.5),
    (r"H100", 989.4),
    (r"GH200", 989.4),
    (r"A100", 312.0),
    (r"L40S", 362.1),
    (r"L4\b", 121.0),
    (r"A10G", 70.0),
]


def known_peak_flops(name: str) -> float | None:
    for pattern, tflops in KNOWN_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops * 1e12
    return None


@dataclass
class DevicePeaks:
    device_name: str
    bandwidth: float  # bytes/s used for MBU
    bandwidth_source: str  # "nvml" | "measured-copy"
    nvml_bandwidth: float | None
    copy_bandwidth: float  # measured, bytes read + written per second
    flops: float  # FLOP/s used for MFU
    flops_source: str  # "datasheet-bf16" | "measured-matmul"
    measured_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nvml_bandwidth(index: int) -> float | None:
    """Peak DRAM bandwidth from NVML: max memory clock (MHz) x 2 (double data rate) x bus width / 8."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
    except Exception:  # NVML present but the call unsupported (MIG, virtual GPUs)
        return None
    return mem_mhz * 1e6 * 2 * bus_bits / 8


def measure_copy_bandwidth(device: str, nbytes: int, reps: int = 5) -> float:
    """Best-of `reps` device copy of `nbytes`, counting bytes read plus written."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best


def measure_matmul_flops(device: str, n: int, dtype: Any, reps: int = 3) -> float:
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_identity(device: str) -> dict[str, str]:
    import platform

    import torch

    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        return {
            "name": torch.cuda.get_device_name(idx),
            "torch": torch.__version__,
            "cuda": str(torch.version.cuda),
        }
    import os

    return {
        "name": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "torch": torch.__version__,
    }


def _cache_file(identity: dict[str, str]) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(identity.values())).strip("-")
    return cache_root() / "perf" / f"peaks-{slug}.json"


def measure_peaks(device: str) -> DevicePeaks:
    import torch

    ident = device_identity(device)
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        nvml = nvml_bandwidth(idx)
        copy_bw = measure_copy_bandwidth(device, 1 << 30)
        flops = known_peak_flops(ident["name"])
        source = "datasheet-bf16"
        if flops is None:
            flops, source = measure_matmul_flops(device, 8192, torch.bfloat16), "measured-matmul"
        bw, bw_source = (nvml, "nvml") if nvml else (copy_bw, "measured-copy")
        return DevicePeaks(ident["name"], bw, bw_source, nvml, copy_bw, flops, source, time.time())
    copy_bw = measure_copy_bandwidth(device, 256 << 20)
    flops = measure_matmul_flops(device, 1024, torch.float32)
    return DevicePeaks(ident["name"], copy_bw, "measured-copy", None, copy_bw, flops, "measured-matmul", time.time())


def device_peaks(device: str, *, refresh: bool = False) -> DevicePeaks:
    """The device's peaks, measured once and cached per device identity (name, driver stack)."""
    path = _cache_file(device_identity(device))
    with locked(path):
        if not refresh and path.is_file():
            try:
                return DevicePeaks(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                pass  # an old or damaged entry: measure again
        peaks = measure_peaks(device)
        path.write_text(json.dumps(peaks.as_dict(), indent=1))
        return peaks


def utilisation(work: float, seconds: float, peak_per_s: float) -> float:
    """100 * (work / seconds) / peak; NaN when a figure is missing."""
    if not seconds or seconds != seconds or not peak_per_s:
        return float("nan")
    return 100.0 * work / seconds / peak_per_s
