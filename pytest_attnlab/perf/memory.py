"""Peak memory of a measurement: torch's CUDA allocator and NVML on GPU, process RSS on CPU."""

from __future__ import annotations

import resource
from typing import Any


def reset(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def read(device: str) -> dict[str, tuple[float, str]]:
    """name -> (value, unit). On CUDA: allocator peaks since `reset` and NVML's device-wide used
    memory now; everywhere: this process's RSS now and its lifetime peak (ru_maxrss)."""
    out: dict[str, tuple[float, str]] = {}
    if device.startswith("cuda"):
        import torch

        out["peak_mem_allocated"] = (float(torch.cuda.max_memory_allocated(device)), "bytes")
        out["peak_mem_reserved"] = (float(torch.cuda.max_memory_reserved(device)), "bytes")
        used = _nvml_used(device)
        if used is not None:
            out["nvml_mem_used"] = (used, "bytes")
    try:
        import psutil

        out["rss"] = (float(psutil.Process().memory_info().rss), "bytes")
    except ImportError:
        pass
    out["max_rss"] = (
        float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        "bytes",
    )  # KiB on Linux
    return out


def peak_bytes(device: str, mem: dict[str, tuple[float, str]]) -> float:
    """The one 'peak memory' figure of a measurement: allocator peak on CUDA, RSS on CPU."""
    key = "peak_mem_allocated" if device.startswith("cuda") else "rss"
    return mem.get(key, (float("nan"), ""))[0]


def _nvml_used(device: str) -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        index = int(device.split(":")[1]) if ":" in device else 0
        handle: Any = pynvml.nvmlDeviceGetHandleByIndex(index)
        return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # no nvidia-ml-py or no driver: the allocator figures stand alone
        return None
