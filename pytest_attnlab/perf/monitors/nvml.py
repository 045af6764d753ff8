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
        self._readers = self._working_readers()
        self.units = {k: v for k, v in self.units.items() if k in self._readers}

    def _working_readers(self) -> dict[str, Any]:
        """Field -> reader, keeping only the queries this GPU/driver answers (VMs refuse some)."""
        n, h = self._nvml, self._handle
        readers = {
            "mem_used": lambda: float(n.nvmlDeviceGetMemoryInfo(h).used),
            "gpu_util": lambda: float(n.nvmlDeviceGetUtilizationRates(h).gpu),
            "mem_util": lambda: float(n.nvmlDeviceGetUtilizationRates(h).memory),
            "power": lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "sm_clock": lambda: float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "mem_clock": lambda: float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            "temperature": lambda: float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
        }
        working = {}
        for name, read in readers.items():
            try:
                read()
            except Exception:  # pynvml.NVMLError_NotSupported and friends
                continue
            working[name] = read
        if not working:
            raise MonitorUnavailable("NVML answered none of the monitored queries on this device")
        return working

    def sample(self) -> dict[str, float]:
        return {name: read() for name, read in self._readers.items()}

    def close(self) -> None:
        pass  # nvmlShutdown is reference counted; leaving it open is cheaper across tests


MONITORS.register("nvml", NvmlMonitor)
