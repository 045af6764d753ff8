"""Model loading for the perf grid: the core model cache, plus a tokenizer-free fallback for
random shapes on machines without the embedded model's package (its tokenizer is not needed:
the benchmark feeds synthetic token ids)."""

from __future__ import annotations

import time
from typing import Any

from pytest_attnlab.models.embedded import EmbeddedModelMissing


def load(session: Any, spec: str | None) -> Any:
    from pytest_attnlab.models.spec import parse_model

    parsed = parse_model(spec) if spec else session.settings.model
    try:
        return session.model(parsed)
    except EmbeddedModelMissing:
        if parsed.source != "random":
            raise
    from pytest_attnlab.models import random_models
    from pytest_attnlab.models.loader import LoadedModel, LoadOptions

    opts = LoadOptions(session.settings.resolved_device(), session.settings.resolved_dtype(), "sdpa", 0)
    start = time.perf_counter()
    model = random_models.build(
        parsed.ref, seed=0, dtype=opts.dtype, device=opts.device, attn_implementation="sdpa"
    )
    return LoadedModel(model, None, parsed, opts, time.perf_counter() - start)
