"""The RTN integer grids and packed storage (pytest_attnlab.quant.grid)."""

from __future__ import annotations

import pytest
import torch

from pytest_attnlab.quant import grid as G


def _w(out: int = 48, cols: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, cols, generator=torch.Generator().manual_seed(seed))


def test_int8_per_channel_error_is_within_half_a_step() -> None:
    grid = G.Grid(8, None, symmetric=True)
    w = _w()
    qt = G.quantize(grid, w)
    assert qt.codes.dtype == torch.int8 and int(qt.codes.abs().max()) <= 127
    step = qt.scales[:, :1]  # one group per row
    err = (G.dequantize(grid, qt, w.shape) - w).abs()
    assert bool((err <= step / 2 + 1e-6).all())


@pytest.mark.parametrize("zero", ["int", "float"])
def test_int4_group_error_is_within_half_a_step(zero: str) -> None:
    grid = G.Grid(4, 32, symmetric=False, zero=zero)
    w = _w()
    qt = G.quantize(grid, w)
    assert int(qt.codes.min()) >= 0 and int(qt.codes.max()) <= 15
    step = qt.scales.repeat_interleave(32, dim=1)
    # the integer zero point rounds the offset too: up to a full step at a group's extremes
    bound = step / 2 if zero == "float" else step
    assert bool(((G.dequantize(grid, qt, w.shape) - w).abs() <= bound + 1e-6).all())


def test_float_zero_reproduces_weights_already_on_a_q4_1_grid() -> None:
    """Weights stored as Q4_1 (w = d * q + m per group of 32) come back exactly (fp16-exact d, m)."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (16, 4, 32), generator=gen).float()
    q[..., 0], q[..., 1] = 0, 15  # each group spans the whole grid, as Q4_1's min/max do
    d = torch.rand(16, 4, 1, generator=gen).half().float() / 8 + 0.01
    m = -torch.rand(16, 4, 1, generator=gen).half().float()
    w = (q * d + m).reshape(16, 128)
    exact = G.Grid(4, 32, symmetric=False, zero="float").fake(w)
    torch.testing.assert_close(exact, w, rtol=0, atol=1e-3)
    lossy = G.Grid(4, 32, symmetric=False, zero="int").fake(w)
    assert float((lossy - w).abs().max()) > 1e-3  # the integer zero point cannot hold a float offset


def test_pack_unpack_round_trip_and_bytes() -> None:
    grid = G.Grid(4, 32, symmetric=False)
    w = _w(8, 64)
    qt = G.quantize(grid, w)
    packed = G.pack(grid, qt)
    assert packed["qweight"].dtype == torch.uint8 and packed["qweight"].shape == (8, 32)  # 2 codes per byte
    assert G.nbytes(packed) == 8 * 32 + 8 * 2 * 2 + 8 * 2  # codes + fp16 scales + uint8 zeros
    back = G.unpack(grid, packed, 64)
    assert torch.equal(back.codes, qt.codes)


def test_short_last_group() -> None:
    """576 columns in groups of 128 (SmolLM2): the fifth group holds 64 columns."""
    grid = G.Grid(4, 128, symmetric=False)
    w = _w(4, 576)
    qt = G.quantize(grid, w)
    assert qt.scales.shape == (4, 5)
    tail = w[:, 512:]
    assert torch.allclose(qt.scales[:, 4], ((tail.amax(1) - tail.amin(1)) / 15).half().float())
    assert G.dequantize(grid, qt, w.shape).shape == w.shape


def test_bad_grid_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from: 4, 8"):
        G.Grid(3, 32, symmetric=False)
    with pytest.raises(ValueError, match="choose from: int, float"):
        G.Grid(4, 32, symmetric=False, zero="half")
