"""Where converted checkpoints live: $ATTNLAB_CACHE_DIR, else $XDG_CACHE_HOME/pytest-attnlab, else ~/.cache."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

COMPLETE = "attnlab-complete.json"


def cache_root() -> Path:
    if env := os.environ.get("ATTNLAB_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-attnlab"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so parallel workers build one cache entry once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(entry: Path) -> bool:
    """True when `entry` was fully written and its files still have the sizes recorded then."""
    marker = entry / COMPLETE
    try:
        sizes = json.loads(marker.read_text())["sizes"]
    except (OSError, ValueError, KeyError):
        return False
    return all((entry / name).is_file() and (entry / name).stat().st_size == size for name, size in sizes.items())


def build_entry(entry: Path, build: Callable[[Path], None]) -> Path:
    """Build a cache entry atomically: `build(tmpdir)`, record file sizes, rename into place."""
    with locked(entry):
        if is_complete(entry):
            return entry
        tmp = entry.with_name(entry.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / COMPLETE).write_text(json.dumps({"sizes": sizes}, indent=1))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    return entry


def invalidate(entry: Path) -> None:
    with locked(entry):
        shutil.rmtree(entry, ignore_errors=True)
