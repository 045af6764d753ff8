"""Host telemetry through psutil: this process's CPU % and resident memory."""

from __future__ import annotations

from pytest_attnlab.perf.monitors.base import MONITORS, MonitorUnavailable


class PsutilMonitor:
    name = "psutil"
    units = {"cpu_percent": "%", "rss": "bytes"}

    def __init__(self, device: str = "cpu") -> None:
        try:
            import psutil
        except ImportError:
            raise MonitorUnavailable("the psutil monitor needs psutil: pip install psutil") from None
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first call only starts the interval

    def sample(self) -> dict[str, float]:
        return {
            "cpu_percent": float(self._proc.cpu_percent(None)),
            "rss": float(self._proc.memory_info().rss),
        }

    def close(self) -> None:
        pass


MONITORS.register("psutil", PsutilMonitor)
