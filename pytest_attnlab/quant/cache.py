"""Cache entries of quantized states, keyed by model, method and settings, so calibration runs once
per machine. An entry that is incomplete (file sizes differ) or unreadable is rebuilt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_attnlab.models import embedded
from pytest_attnlab.models.cache import build_entry, cache_root, invalidate, is_complete
from pytest_attnlab.models.random_models import RANDOM_CONFIGS
from pytest_attnlab.quant.packed import QuantState

#: bump when the stored format or a method's algorithm changes: old entries are then ignored
FORMAT_VERSION = 1


def model_key(spec: Any, options: Any) -> dict[str, Any]:
    """What identifies the weights: the embedded model's cache entry (its GGUF's bytes), a random
    shape's config + seed, a folder's mtime."""
    key: dict[str, Any] = {"source": spec.source, "ref": spec.ref, "dtype": str(options.dtype)}
    if spec.source == "embedded":
        key["entry"] = embedded.cache_entry().name
    elif spec.source == "random":
        # the shape's config too: a shape re-registered under the same name (a test's override) is other weights
        key["seed"], key["config"] = options.seed, RANDOM_CONFIGS.get(spec.ref)()
    elif spec.source == "local":
        key["mtime"] = max((p.stat().st_mtime for p in Path(spec.ref).glob("*.safetensors")), default=0)
    return key


def entry_for(spec: Any, options: Any, name: str, settings: dict[str, Any], root: Path | None = None) -> Path:
    blob = json.dumps(
        {"model": model_key(spec, options), "method": name, "settings": settings, "v": FORMAT_VERSION},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{spec.label}-{name}")
    return (root or cache_root() / "quant") / f"{safe}-{digest}"


def load_or_build(entry: Path, make: Callable[[], QuantState]) -> QuantState:
    """The cached state in `entry`, building it with `make()` when missing, incomplete or unreadable."""
    if is_complete(entry):
        try:
            return QuantState.load(entry)
        except Exception:  # noqa: BLE001 - a corrupt file of the recorded size: rebuild it
            invalidate(entry)
    build_entry(entry, lambda tmp: make().save(tmp))
    return QuantState.load(entry)


def invalidate_for(loaded: Any, name: str, settings: dict[str, Any]) -> None:
    """Drop the cache entry of quantizer `name` (its `settings()`) for this LoadedModel (the next quantize
    rebuilds it)."""
    invalidate(entry_for(loaded.spec, loaded.options, name, settings))
