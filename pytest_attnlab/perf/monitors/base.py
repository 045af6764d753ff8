"""The Monitor protocol and its registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pytest_attnlab.registry import Registry


class MonitorUnavailable(RuntimeError):
    """The monitor's library or device is missing; the message says what to install."""


class Monitor(Protocol):
    name: str
    #: field -> unit for every key `sample()` returns
    units: dict[str, str]

    def sample(self) -> dict[str, float]: ...

    def close(self) -> None: ...


#: name -> factory(device: str) -> Monitor
MONITORS: Registry[Callable[[str], Monitor]] = Registry("monitor")
