"""The object behind the `gpu_monitor` fixture: one Sampler per test, its timeline dumped as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_attnlab.perf.monitors.base import Monitor
from pytest_attnlab.perf.monitors.sampler import Sampler
from pytest_attnlab.reports.layout import ReportLayout


class MonitorHandle:
    """Samples `monitor` every `interval` seconds from `start()` to `stop()`.

    `timeline` is a list of dicts (`t` in seconds plus one key per field, see `units`);
    `summary()` gives peak and mean per field; `path` is where `finish()` dumped the JSON.
    """

    def __init__(self, monitor: Monitor | None, interval: float) -> None:
        self.monitor = monitor
        self.interval = interval
        self.sampler = Sampler(monitor, interval) if monitor is not None else None
        self.path: Path | None = None

    @property
    def name(self) -> str:
        return self.monitor.name if self.monitor is not None else "none"

    @property
    def units(self) -> dict[str, str]:
        return dict(self.monitor.units) if self.monitor is not None else {}

    @property
    def timeline(self) -> list[dict[str, float]]:
        return self.sampler.timeline if self.sampler is not None else []

    def summary(self) -> dict[str, dict[str, float]]:
        return self.sampler.summary() if self.sampler is not None else {}

    def start(self) -> MonitorHandle:
        if self.sampler is not None and self.sampler._thread is None:
            self.sampler.start()
        return self

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def __enter__(self) -> MonitorHandle:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def finish(self, report_dir: Path, nodeid: str, recorder: Any = None) -> Path | None:
        """Stop, dump the timeline JSON and record `<monitor>_<field>_peak/_mean` rows."""
        self.stop()
        if self.sampler is None:
            return None
        self.path = self.sampler.dump(ReportLayout(report_dir).monitor_timeline(nodeid), nodeid=nodeid)
        if recorder is not None:
            for field, stats in self.summary().items():
                unit = self.units.get(field, "")
                recorder.record(f"{self.name}_{field}_peak", stats["peak"], unit, monitor_samples=int(stats["samples"]))
                recorder.record(f"{self.name}_{field}_mean", stats["mean"], unit, monitor_samples=int(stats["samples"]))
        return self.path
