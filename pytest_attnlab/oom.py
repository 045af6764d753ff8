"""Out of device memory is one failed case, not a dead run.

A case that does not fit (the 3B shape at batch 256 x prompt 32k, say) fails with a message that
names the case and the memory it asked for; the frames of its traceback, which hold the case's
tensors, are cleared and the allocator's cache emptied, so the next cases start with the memory free.
"""

from __future__ import annotations

import gc
import re
import sys
import traceback
from typing import Any

_ASKED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)")
_HELD = re.compile(r"(\d[\d.]* [KMGT]i?B) is allocated by PyTorch")


class CaseOutOfMemory(AssertionError):
    """The case ran out of device memory; the message says which case and how much it asked for."""


def is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),) if k is not None)
    return isinstance(exc, kinds) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def describe(exc: BaseException, case: str) -> str:
    text = str(exc)
    asked = _ASKED.search(text)
    held = _HELD.search(text)
    parts = [f"{case}: out of device memory"]
    parts.append(f"asked for {asked.group(1)}" if asked else "the allocation size was not reported")
    if held:
        parts.append(f"{held.group(1)} already held by PyTorch")
    return "; ".join(parts) + ". The memory was freed for the next case; shrink the case to make it fit."


def release(exc: BaseException) -> None:
    """Drop what the failed case's frames hold, then return the cached blocks to the device."""
    tb: Any = exc.__traceback__
    traceback.clear_frames(tb)
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def fail_case_if_oom(exc: BaseException, case: str) -> None:
    """Raise CaseOutOfMemory (with the memory released) when `exc` is an out-of-memory error; else return."""
    if is_oom(exc):
        release(exc)
        raise CaseOutOfMemory(describe(exc, case)) from None
