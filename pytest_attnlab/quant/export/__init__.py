"""Writing quantized states as checkpoints that vLLM and transformers load: compressed-tensors,
GPTQ, AWQ. A format is an `Exporter` in `EXPORT_FORMATS`; users add one with
`EXPORT_FORMATS.register(name, MyExporter())`.

    from pytest_attnlab.quant import quantize
    from pytest_attnlab.quant.export import export
    folder = export(quantize(model_factory(), "rtn-int4-g64-zp"))   # compressed-tensors by default

Exports are cached beside the quantizer's cache entry and rebuilt when incomplete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytest_attnlab.models.cache import build_entry, cache_root
from pytest_attnlab.quant.export.awq import AWQExporter
from pytest_attnlab.quant.export.base import Exporter, ExportUnsupported
from pytest_attnlab.quant.export.compressed_tensors import CompressedTensorsExporter
from pytest_attnlab.quant.export.gptq import GPTQExporter
from pytest_attnlab.registry import Registry

#: bump when a format's layout changes: old exports are then rebuilt
EXPORT_VERSION = 1
AUTO = "auto"

EXPORT_FORMATS: Registry[Exporter] = Registry("checkpoint format")
for _exporter in (CompressedTensorsExporter(), GPTQExporter(), AWQExporter()):
    EXPORT_FORMATS.register(_exporter.name, _exporter)

#: a method's own checkpoint format (QuantState.info["method"]); others go to compressed-tensors
NATIVE_FORMAT = {"gptq": "gptq", "awq": "awq"}
DEFAULT_FORMAT = "compressed-tensors"

__all__ = [
    "AUTO",
    "EXPORT_FORMATS",
    "ExportUnsupported",
    "Exporter",
    "choose",
    "export",
    "format_for",
    "unsupported_reason",
]


def choose(qmodel: Any, fmt: str = AUTO) -> tuple[str, str | None]:
    """(the format `fmt` resolves to, why it cannot hold `qmodel`'s state or None). "auto" is the
    method's native format when that can hold the state, else compressed-tensors."""
    if fmt != AUTO:
        EXPORT_FORMATS.get(fmt)  # UnknownNameError lists the formats
    state = getattr(qmodel, "state", None)
    if state is None:
        return (DEFAULT_FORMAT if fmt == AUTO else fmt), (
            f"quantizer {getattr(qmodel, 'quant', '?')!r} keeps no packed state to export (bitsandbytes quantizes "
            "inside its own layers); export needs a packed-state quantizer (RTN, GPTQ, AWQ)"
        )
    if fmt == AUTO:
        native = NATIVE_FORMAT.get(str(state.info.get("method")))
        if native and EXPORT_FORMATS.get(native).unsupported(state) is None:
            return native, None
        fmt = DEFAULT_FORMAT
    reason = EXPORT_FORMATS.get(fmt).unsupported(state)
    return fmt, (f"{qmodel.quant} as {fmt}: {reason}" if reason else None)


def format_for(qmodel: Any, fmt: str = AUTO) -> str:
    """The format `fmt` resolves to (see choose)."""
    return choose(qmodel, fmt)[0]


def unsupported_reason(qmodel: Any, fmt: str = AUTO) -> str | None:
    """Why `qmodel` cannot be exported as `fmt`, or None."""
    return choose(qmodel, fmt)[1]


def export(qmodel: Any, fmt: str = AUTO, dest: Path | None = None) -> Path:
    """A checkpoint folder of the QuantizedModel `qmodel` in format `fmt`; ExportUnsupported says why not."""
    name, reason = choose(qmodel, fmt)
    if reason:
        raise ExportUnsupported(reason)
    exporter = EXPORT_FORMATS.get(name)
    folder = dest or default_folder(qmodel, name)
    base = qmodel.base if qmodel.base is not None else qmodel
    build_entry(folder, lambda tmp: exporter.write(qmodel.state, base.model, qmodel.tokenizer, tmp))
    return folder


def default_folder(qmodel: Any, fmt: str) -> Path:
    """Beside the quantizer cache: <cache>/quant-export/<entry>-<format>-v<N>; without a cache entry,
    a folder named by a digest of the packed state."""
    if qmodel.cache_entry is not None:
        label = qmodel.cache_entry.name
    else:
        digest = hashlib.sha256()
        for name in sorted(qmodel.state.linears)[:4]:
            digest.update(qmodel.state.linears[name]["qweight"].numpy().tobytes())
        label = f"{qmodel.quant}-{digest.hexdigest()[:16]}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in fmt)
    return cache_root() / "quant-export" / f"{label}-{safe}-v{EXPORT_VERSION}"
