"""A planted decode slowdown (`--attnlab-perf-plant-slowdown F`): the bug the compare gate must catch.

Every decode step (tokens 2..n) is held on the device for F times that step's own unplanted time,
estimated from the previous round (warmup rounds give the first estimate), so TPOT grows by F and
TTFT is untouched. On CUDA the hold is `torch.cuda._sleep`, a kernel that spins on the stream: the
token's event is recorded after it, as a slower kernel would be. On CPU it is a busy wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_attnlab.perf.llm_metrics import Run


class PlantedSlowdown:
    def __init__(self, fraction: float, device: Any) -> None:
        self.fraction = fraction
        self.cuda = str(device).startswith("cuda")
        self.step_s: float | None = None  # unplanted seconds per decode step, from the last round
        self.held_s = 0.0  # seconds held per decode step in the current round
        self._cycles_per_s: float | None = None

    def wrap(self, mark: Callable[[], None]) -> Callable[[], None]:
        """`mark` with a hold before every token after the first."""
        hold = self.fraction * self.step_s if self.step_s else 0.0
        self.held_s = hold
        first = [True]

        def planted_mark() -> None:
            if not first[0] and hold > 0:
                self._hold(hold)
            first[0] = False
            mark()

        return planted_mark

    def observe(self, run: Run) -> None:
        """Learn the unplanted step time from a finished round."""
        if run.out_tokens > 1:
            self.step_s = max(run.tpot - self.held_s, 0.0)

    def _hold(self, seconds: float) -> None:
        if self.cuda:
            import torch

            torch.cuda._sleep(max(int(seconds * self._cycles()), 1))
            return
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def _cycles(self) -> float:
        """GPU clock cycles per second of `torch.cuda._sleep`, timed once with events."""
        if self._cycles_per_s is None:
            import torch

            n = 2_000_000
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(n)  # first launch out of the timing
            start.record()
            torch.cuda._sleep(n)
            end.record()
            end.synchronize()
            self._cycles_per_s = n / (start.elapsed_time(end) / 1e3)
        return self._cycles_per_s
