"""Machine details for pytest-benchmark's machine_info: GPU, driver, library versions, model."""

from __future__ import annotations

from typing import Any


def describe(device: str, model_label: str, dtype: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "device": device,
        "model": model_label,
        "dtype": dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info.update(
            gpu=props.name,
            gpu_memory_bytes=props.total_memory,
            gpu_sm_count=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
        info.update(_nvml(idx))
    return info


def _nvml(index: int) -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "nvml_mem_bus_width_bits": pynvml.nvmlDeviceGetMemoryBusWidth(h),
            "nvml_max_mem_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "nvml_max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
        }
    except Exception as exc:  # no nvidia-ml-py, or NVML refused a query
        return {"nvml": f"unavailable: {exc}"}
