"""A daemon thread that samples a Monitor every `interval` seconds into a timeline."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from pytest_attnlab.perf.monitors.base import Monitor


class Sampler:
    """`with Sampler(monitor, 0.02) as s: ...`; afterwards `s.timeline` is a list of dicts
    `{"t": seconds since start, field: value, ...}` and `s.summary()` the peak and mean per field."""

    def __init__(self, monitor: Monitor, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"monitor interval must be > 0 s, got {interval}")
        self.monitor = monitor
        self.interval = interval
        self.timeline: list[dict[str, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _take(self) -> None:
        try:
            row = self.monitor.sample()
        except Exception as exc:  # a failing read must not kill the benchmark
            self.errors.append(repr(exc))
            return
        self.timeline.append({"t": time.perf_counter() - self._t0, **row})

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            self._take()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def start(self) -> Sampler:
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"attnlab-{self.monitor.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._take()  # one last sample, so even a short test has an end point

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def summary(self) -> dict[str, dict[str, float]]:
        return summarise(self.timeline)

    def dump(self, path: Path, **meta: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "monitor": self.monitor.name,
            "interval_s": self.interval,
            "units": self.monitor.units,
            "summary": self.summary(),
            "errors": self.errors,
            **meta,
            "timeline": self.timeline,
        }
        path.write_text(json.dumps(payload, indent=1))
        return path


def summarise(timeline: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per field: peak (max), mean and the number of samples."""
    fields = [k for k in (timeline[0] if timeline else {}) if k != "t"]
    out = {}
    for f in fields:
        values = [row[f] for row in timeline if f in row]
        out[f] = {"peak": max(values), "mean": statistics.fmean(values), "samples": len(values)}
    return out
