"""Clocks that timestamp each generated token: CUDA events on GPU, perf_counter on CPU.

A clock is started right before the prompt goes in; `mark()` is called once per produced token
(after the op that produced it was enqueued); `stop()` synchronises the device once and returns
the seconds from the start to every mark. CUDA events are recorded on the current stream, so the
timeline is the GPU's own and no per-token host sync disturbs the run (as in optimum-benchmark's
latency tracker).
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class TokenClock(Protocol):
    def start(self) -> None: ...
    def mark(self) -> None: ...
    def stop(self) -> list[float]: ...


class PerfCounterClock:
    """Host clock; exact on CPU where every torch op has finished when it returns."""

    def __init__(self, expected_marks: int = 0) -> None:
        self._t0 = 0.0
        self._marks: list[float] = []

    def start(self) -> None:
        self._marks = []
        self._t0 = time.perf_counter()

    def mark(self) -> None:
        self._marks.append(time.perf_counter())

    def stop(self) -> list[float]:
        return [m - self._t0 for m in self._marks]


class CudaEventClock:
    """CUDA events recorded on the current stream; events are made ahead so `mark` costs ~1 us."""

    def __init__(self, expected_marks: int = 0, device: Any = None) -> None:
        import torch

        self._torch = torch
        self._device = device
        self._pool = [torch.cuda.Event(enable_timing=True) for _ in range(expected_marks + 1)]
        self._used = 0

    def _event(self) -> Any:
        if self._used == len(self._pool):
            self._pool.append(self._torch.cuda.Event(enable_timing=True))
        ev = self._pool[self._used]
        self._used += 1
        return ev

    def start(self) -> None:
        self._torch.cuda.synchronize(self._device)  # nothing earlier may leak into the first interval
        self._used = 0
        self._event().record()

    def mark(self) -> None:
        self._event().record()

    def stop(self) -> list[float]:
        self._torch.cuda.synchronize(self._device)
        first = self._pool[0]
        return [first.elapsed_time(ev) / 1e3 for ev in self._pool[1 : self._used]]


def clock_for(device: Any, expected_marks: int = 0) -> TokenClock:
    """The clock that fits `device` (a torch.device or string)."""
    if str(device).startswith("cuda"):
        return CudaEventClock(expected_marks, device)
    return PerfCounterClock(expected_marks)


def synchronize(device: Any) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
