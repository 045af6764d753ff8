"""The monitor registry, the sampling thread, the psutil fallback and the timeline dump."""

from __future__ import annotations

import json
import math
import time

import pytest

from pytest_attnlab.perf.monitors import MonitorUnavailable, Sampler, pick, summarise
from pytest_attnlab.perf.monitors.handle import MonitorHandle
from pytest_attnlab.registry import UnknownNameError
from pytest_attnlab.reports.layout import ReportLayout


class Counter:
    name = "counter"
    units = {"n": "count"}

    def __init__(self):
        self.n = 0

    def sample(self):
        self.n += 1
        return {"n": float(self.n)}

    def close(self):
        pass


def test_sampler_takes_samples_at_the_interval():
    with Sampler(Counter(), 0.005) as s:
        time.sleep(0.1)
    assert len(s.timeline) >= 5
    ts = [row["t"] for row in s.timeline]
    assert ts == sorted(ts)
    summary = s.summary()["n"]
    assert summary["peak"] == len(s.timeline)
    assert summary["mean"] == pytest.approx((len(s.timeline) + 1) / 2)


def test_summarise_peak_and_mean():
    out = summarise([{"t": 0, "a": 1.0}, {"t": 1, "a": 3.0}])
    assert out == {"a": {"peak": 3.0, "mean": 2.0, "samples": 2}}


def test_failing_sample_is_recorded_not_raised():
    class Broken(Counter):
        def sample(self):
            raise RuntimeError("driver gone")

    with Sampler(Broken(), 0.005) as s:
        time.sleep(0.02)
    assert not s.timeline and "driver gone" in s.errors[0]


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="> 0"):
        Sampler(Counter(), 0)


def test_psutil_monitor_on_cpu():
    m = pick("auto", "cpu")
    assert m.name == "psutil"
    row = m.sample()
    assert row["rss"] > 0 and set(row) == set(m.units)


def test_unknown_monitor_names_choices():
    with pytest.raises(UnknownNameError, match="nvml"):
        pick("nope", "cpu")


def test_nvml_samples_or_says_why():
    """Without NVML the monitor names what is missing; with it, a sample holds every field it
    announced, each a finite reading (and the memory in use is more than nothing)."""
    try:
        monitor = pick("nvml", "cuda:0")  # pick registers the built-in monitors first
    except MonitorUnavailable as exc:
        assert "nvidia-ml-py" in str(exc) or "NVML" in str(exc)
        return
    try:
        row = monitor.sample()
    finally:
        monitor.close()
    assert row and set(row) == set(monitor.units), (row, monitor.units)
    assert all(math.isfinite(v) for v in row.values()), row
    if "mem_used" in row:
        assert row["mem_used"] > 0, row


def test_handle_dumps_timeline_and_records(tmp_path):
    recorded = []

    class Rec:
        def record(self, name, value, unit="", **ctx):
            recorded.append((name, value, unit))

    h = MonitorHandle(Counter(), 0.005).start()
    time.sleep(0.03)
    path = h.finish(tmp_path, "suites/perf/test_x.py::test_y[p16-b1]", Rec())
    assert path == ReportLayout(tmp_path).monitor_timeline("suites/perf/test_x.py::test_y[p16-b1]")
    data = json.loads(path.read_text())
    assert data["timeline"] and data["units"] == {"n": "count"}
    assert {r[0] for r in recorded} == {"counter_n_peak", "counter_n_mean"}
