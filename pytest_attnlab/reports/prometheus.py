"""Prometheus output: the run's metrics as a textfile-collector file, and live gauges on a local port.

The textfile needs no library (the exposition format is plain text; written to a temp file and
renamed, as node_exporter's textfile collector asks). The live endpoint uses prometheus_client
(extra `prometheus`) and binds to 127.0.0.1 only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_attnlab.metrics.row import MetricRow

LABELS = ("nodeid", "metric", "unit", "model", "quant", "attention", "backend", "device", "dtype")
EXTRA_HINT = "pip install 'pytest-attnlab[prometheus]'"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def textfile(rows: Iterable[MetricRow], run_id: str) -> str:
    """Exposition text: one `attnlab_metric` sample per numeric row (the last value per label set)."""
    samples: dict[str, float] = {}
    for r in rows:
        if r.value is None:
            continue
        labels = {k: str(getattr(r, k)) for k in LABELS}
        labels["run_id"] = run_id
        for key in ("layer", "batch", "prompt_len"):
            if key in r.extra:
                labels[key] = str(r.extra[key])
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        samples[body] = r.value
    out = [
        "# HELP attnlab_metric A metric recorded by a pytest-attnlab test (see the metric label).",
        "# TYPE attnlab_metric gauge",
        *(f"attnlab_metric{{{k}}} {_num(v)}" for k, v in samples.items()),
    ]
    return "\n".join(out) + "\n"


def write_textfile(path: Path, rows: Iterable[MetricRow], run_id: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(textfile(rows, run_id), encoding="utf-8")
    os.replace(tmp, path)  # atomic: the collector never reads half a file
    return path


_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


class LiveExporter:
    """Serves `attnlab_metric` gauges (updated per recorded row) and process CPU/RSS/GPU memory."""

    def __init__(self, port: int, worker: str | None) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise ImportError(f"--attnlab-prometheus-port needs prometheus_client: {EXTRA_HINT}") from None
        self._pc = prometheus_client
        self.registry = prometheus_client.CollectorRegistry()
        self.metric = prometheus_client.Gauge(
            "attnlab_metric",
            "Last value of a metric recorded by a pytest-attnlab test",
            ["metric", "model", "quant", "attention", "nodeid"],
            registry=self.registry,
        )
        self.registry.register(_ProcessCollector(worker or "main"))
        self.server, self.thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def observe(self, row: Any) -> None:
        value = row.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ctx = row.context
            self.metric.labels(
                row.metric,
                str(ctx.get("model", "")),
                str(ctx.get("quant", "")),
                str(ctx.get("attention", "")),
                row.nodeid,
            ).set(float(value))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ProcessCollector:
    """Monitor gauges read at scrape time: this process's CPU and RSS, and CUDA memory if in use."""

    def __init__(self, worker: str) -> None:
        import psutil

        self.worker = worker
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)

    def collect(self) -> Any:
        import sys

        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, doc: str, value: float) -> Any:
            g = GaugeMetricFamily(name, doc, labels=["worker"])
            g.add_metric([self.worker], value)
            return g

        yield gauge("attnlab_process_cpu_percent", "CPU use of the test process", self.proc.cpu_percent(None))
        yield gauge("attnlab_process_rss_bytes", "Resident memory of the test process", self.proc.memory_info().rss)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():  # never initialise CUDA from a scrape
            yield gauge(
                "attnlab_cuda_memory_allocated_bytes",
                "torch.cuda.memory_allocated()",
                torch.cuda.memory_allocated(),
            )
            yield gauge(
                "attnlab_cuda_max_memory_allocated_bytes",
                "torch.cuda.max_memory_allocated()",
                torch.cuda.max_memory_allocated(),
            )
