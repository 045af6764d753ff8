"""Progress of long library steps (GGUF conversion, calibrated quantization, torch.compile, engine start).

Library code reports through `logging`, never through pytest, so it runs the same outside a test run::

    with progress.step("quantize awq-int4", total=len(layers), unit="layer") as p:
        for layer in layers:
            ...
            p.advance()

Each step sends a "start" record, rate-limited "update" records (at most one per `interval`
seconds, plus the first one and the one reaching `total`) and an "end" record to the logger
`pytest_attnlab.progress`; the records carry `step`, `k`, `n`, `unit`, `elapsed`, `phase` and
`failed` in their attributes (logging's `extra`). Outside pytest nothing is shown unless the
caller configures that logger; inside, `pytest_attnlab.status_line` renders a terminal line and
keeps each finished step's duration for summary.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOGGER_NAME = "pytest_attnlab.progress"
logger = logging.getLogger(LOGGER_NAME)

#: seconds between two "update" records of one step (about 4 per second)
INTERVAL = 0.25


@dataclass(frozen=True)
class StepTime:
    """A finished step: its name, how long it ran, the test it ran in (None: outside a test)."""

    name: str
    seconds: float
    nodeid: str | None


class Step:
    """A running step; `update(k)` / `advance()` report progress, rate-limited to one record per interval."""

    def __init__(self, name: str, total: int | None = None, unit: str = "", interval: float = INTERVAL) -> None:
        self.name, self.total, self.unit, self.interval = name, total, unit, interval
        self.k = 0
        self.start = time.perf_counter()
        self._last = -math.inf  # the first update is always sent

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, k: int) -> None:
        """Set the progress to `k` (of `total`)."""
        self.k = k
        now = time.perf_counter()
        if now - self._last >= self.interval or (self.total is not None and k >= self.total):
            self._last = now
            self._emit("update", logging.DEBUG)

    def advance(self, n: int = 1) -> None:
        self.update(self.k + n)

    def _emit(self, phase: str, level: int, failed: bool = False) -> None:
        if not logger.isEnabledFor(level):
            return
        extra = {
            "step": self.name,
            "k": self.k,
            "n": self.total,
            "unit": self.unit,
            "elapsed": self.elapsed,
            "phase": phase,
            "failed": failed,
        }
        logger.log(level, "%s", describe(self.name, self.k, self.total, extra["elapsed"], self.unit), extra=extra)

    def __repr__(self) -> str:
        return f"Step({self.name!r}, k={self.k}, total={self.total})"


@contextmanager
def step(name: str, total: int | None = None, *, unit: str = "", interval: float = INTERVAL) -> Iterator[Step]:
    """Run a named step: a "start" record now, an "end" record (with `failed`) when the block exits."""
    s = Step(name, total, unit, interval)
    s._emit("start", logging.INFO)
    failed = True
    try:
        yield s
        failed = False
    finally:
        s._emit("end", logging.INFO, failed=failed)


def describe(name: str, k: int, n: int | None, elapsed: float, unit: str = "") -> str:
    """'quantize awq layer 3/30, 12.3 s': the step, k of n (k alone without a total, nothing at 0), the time."""
    unit = f" {unit}" if unit else ""
    done = f"{unit} {k}/{n}" if n is not None else (f"{unit} {k}" if k else "")
    return f"{name}{done}, {elapsed:.1f} s"
