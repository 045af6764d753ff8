"""Device monitors behind one Protocol, chosen by name from MONITORS (nvml, psutil).

Users add one from a conftest.py: `MONITORS.register("mine", MyMonitorFactory)`; a factory takes
the device string and returns an object with `name`, `sample() -> dict` and `close()`.
"""

from __future__ import annotations

from pytest_attnlab.perf.monitors import cpu, nvml  # noqa: F401  (registers the built-ins)
from pytest_attnlab.perf.monitors.base import MONITORS, Monitor, MonitorUnavailable
from pytest_attnlab.perf.monitors.sampler import Sampler, summarise

__all__ = ["MONITORS", "Monitor", "MonitorUnavailable", "Sampler", "summarise", "pick"]


def pick(name: str, device: str) -> Monitor:
    """`auto`: nvml on CUDA (psutil when NVML is unavailable), psutil on CPU; else the named one."""
    if name != "auto":
        return MONITORS.get(name)(device)
    if device.startswith("cuda"):
        try:
            return MONITORS.get("nvml")(device)
        except MonitorUnavailable:
            pass
    return MONITORS.get("psutil")(device)
