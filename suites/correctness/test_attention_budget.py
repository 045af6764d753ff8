"""Lossy variants get no worse as their budget grows (window, kept blocks, latent rank).

Only the honest property is asserted: a larger budget is never worse than a smaller one by more
than a noise margin (logits cosine 0.005). The values themselves are recorded, not gated.
"""

from __future__ import annotations

import pytest

from pytest_attnlab.attention import applied, block_sparse, mla, sliding_window
from pytest_attnlab.attention.evaluate import measure

NOISE = 0.005
LADDERS = {
    "sliding_window": [sliding_window(w) for w in (16, 64, 256)],
    "sliding_window_sink4": [sliding_window(w, sinks=4) for w in (16, 64, 256)],
    "block_sparse": [block_sparse(32, k) for k in (1, 3, 8)],
    "mla_joint": [mla(r, joint=True) for r in (96, 192, 288)],
}


@pytest.mark.parametrize("ladder", LADDERS, ids=str)
def test_attention_budget_is_monotone(attnlab_model, attention_sample, ladder, metrics):
    ids, reference = attention_sample
    rows = []
    for variant in LADDERS[ladder]:
        if variant.unavailable(attnlab_model.model):
            pytest.skip(variant.unavailable(attnlab_model.model))
        with applied(attnlab_model.model, variant):
            q = measure(attnlab_model.model, ids, reference)
        metrics.record("logits_cosine", q.logits_cosine, attention=variant.name, **variant.params)
        metrics.record("perplexity", q.perplexity, attention=variant.name, **variant.params)
        rows.append({"variant": variant.name, **{k: round(v, 5) for k, v in q.as_dict().items()}})
    metrics.table(f"{ladder}: quality vs budget", rows)
    cos = [r["logits_cosine"] for r in rows]
    assert all(b >= a - NOISE for a, b in zip(cos, cos[1:], strict=False)), rows
