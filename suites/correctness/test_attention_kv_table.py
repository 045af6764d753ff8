"""KV-cache and parameter table of MHA / MQA / GQA / MLA at d_model 512, 8 heads (seed 001/002).

Naming follows the GQA paper: GQA-g has g KV heads. The seed's table mixes conventions: its
"GQA-4 75 %" KV saving is 2 KV heads (group size 4, `gqa_2` here) while its "GQA-4 0.79M" params
are 4 KV heads (`gqa_4`); its "MLA-256 50 %" KV saving is separate K/V latents of 256 (`mla_256`)
while its "0.92M" params are one joint latent (`mla_joint_256`). Each number is checked against
the design it fits.
"""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab.attention.modules import SEED_SHAPES, AttentionBlock, cache_bytes, param_count

D, H, HD = 512, 8, 64
MHA_KV = 2 * H * HD
#: seed figure -> (shape name, KV reduction); params in millions as the seed rounds them
SEED_KV = {"mqa": 0.875, "gqa_2": 0.75, "mla_256": 0.50}
SEED_PARAMS_M = {"mha": 1.05, "mqa": 0.59, "gqa_2": 0.66, "gqa_4": 0.79, "mla_joint_256": 0.92}


def closed_form_params(shape) -> int:
    if shape.latent:
        return 2 * D * D + D * shape.latent * shape.latent_kv + 2 * shape.latent * D
    return 2 * D * D + 2 * D * (shape.kv_heads or H) * HD


@pytest.mark.parametrize("shape", SEED_SHAPES, ids=lambda s: s.name)
def test_attention_kv_table(shape, metrics):
    torch.manual_seed(0)
    block = AttentionBlock(shape).eval()
    cache: list[torch.Tensor] = []
    with torch.inference_mode():
        block(torch.randn(2, 64, D), cache)
    per_token = cache_bytes(cache) / (2 * 64 * 4)  # batch 2, 64 tokens, float32 -> elements
    reduction = 1 - per_token / MHA_KV
    metrics.update_context(attention=shape.name, model="module-d512-h8")
    metrics.record("kv_elems_per_token", per_token)
    metrics.record("kv_reduction", reduction, threshold=SEED_KV.get(shape.name))
    metrics.record("params", param_count(block), threshold=SEED_PARAMS_M.get(shape.name))
    assert per_token == shape.kv_elems_per_token()
    assert param_count(block) == closed_form_params(shape)
    if shape.name in SEED_KV:
        assert reduction == pytest.approx(SEED_KV[shape.name], abs=1e-12)
    if shape.name in SEED_PARAMS_M:
        assert param_count(block) / 1e6 == pytest.approx(SEED_PARAMS_M[shape.name], abs=0.005)
