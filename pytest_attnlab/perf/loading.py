"""Model loading for the perf grid, through the core model cache (random shapes load without a
tokenizer where the embedded model's package is missing: the benchmark feeds synthetic ids)."""

from __future__ import annotations

from typing import Any

from pytest_attnlab.models.spec import parse_model


def load(session: Any, spec: str | None) -> Any:
    return session.model(parse_model(spec) if spec else session.settings.model)
