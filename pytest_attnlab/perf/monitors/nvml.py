"""NVIDIA telemetry through nvidia-ml-py (`import pynvml`), imported only when this monitor is built."""

from __future__ import annotations

from typing import Any

from pytest_attnlab.perf.monitors.base import MONITORS, MonitorUnavailable

INSTALL_HINT = "pip install 'pytest-attnlab[gpu]'  (nvidia-ml-py)"


class NvmlMonitor:
    name = "nvml"
    units = {
        "mem_used": "bytes",
        "gpu_util": "%",
        "mem_util": "%",
        "power": "W",
        "sm_clock": "MHz",
        "mem_clock": "MHz",
        "temperature": "C",
    }

    def __init__(self, device: str) -> None:
        try:
            import pynvml
        except ImportError:
            raise MonitorUnavailable(f"the nvml monitor needs nvidia-ml-py: {INSTALL_HINT}") from None
        try:
            pynvml.nvmlInit()
            index = int(device.split(":")[1]) if ":" in device else 0
            self._handle: Any = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # pynvml.NVMLError: no driver, no device
            raise MonitorUnavailable(f"NVML could not open {device!r}: {exc}") from None
        self._nvml = pynvml

    def sample(self) -> dict[str, float]:
        n, h = self._nvml, self._handle
        util = n.nvmlDeviceGetUtilizationRates(h)
        return {
            "mem_used": float(n.nvmlDeviceGetMemoryInfo(h).used),
            "gpu_util": float(util.gpu),
            "mem_util": float(util.memory),
            "power": n.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "sm_clock": float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "mem_clock": float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            "temperature": float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
        }

    def close(self) -> None:
        pass  # nvmlShutdown is reference counted; leaving it open is cheaper across tests


MONITORS.register("nvml", NvmlMonitor)
