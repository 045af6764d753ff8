"""paths/marlin_int4.py: the GPTQ packing it hands to vLLM's repack (CPU), and on CUDA with vLLM, Marlin's
product against the grid's own dequantized weights, with a zero point planted one off."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pytest_attnlab.paths import marlin_int4 as MI


def _unpack(packed: torch.Tensor) -> torch.Tensor:
    rows = [(packed >> (4 * j)) & 0xF for j in range(8)]
    return torch.stack(rows, dim=1).reshape(-1, packed.shape[1]).T


def test_gptq_pack_puts_eight_input_rows_in_a_word_low_nibble_first():
    codes = torch.randint(0, 16, (64, 256), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = MI.gptq_pack(codes)
    assert packed.shape == (32, 64) and packed.dtype == torch.int32
    torch.testing.assert_close(_unpack(packed), codes.to(torch.int32), rtol=0, atol=0)
    assert packed[0, 0].item() & 0xF == codes[0, 0].item()  # input column 0 in the lowest bits
    assert (packed[0, 0].item() >> 28) & 0xF == codes[0, 7].item()  # column 7 in the top nibble (the sign bit)


def test_marlin_on_cpu_says_it_needs_cuda():
    with pytest.raises(MI.MarlinUnavailable, match="CUDA"):
        MI.MarlinInt4(torch.zeros(64, 128), None, 128, torch.bfloat16)


def test_marlin_takes_integer_zero_points_only_and_says_which_option_gives_them():
    with pytest.raises(MI.MarlinShapeError, match="--attnlab-perf-fast-quant int4-g128-zp"):
        MI.MarlinInt4(torch.zeros(64, 128), None, 128, torch.bfloat16, zero="float")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_marlin_without_vllm_names_the_extra(monkeypatch):
    with pytest.raises(MI.MarlinUnavailable, match=r"pytest-attnlab\[vllm\]"):
        MI.vllm_ops()


def _gpu_marlin() -> None:
    if not torch.cuda.is_available():
        pytest.skip("Marlin's kernel runs on CUDA; this machine has none")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("Marlin's kernel comes with vLLM: pip install 'pytest-attnlab[vllm]'")


def _check(y: torch.Tensor, ref: torch.Tensor) -> None:
    """suites/perf/test_decode_gemv.py's check of a kernel against cuBLAS: 1 % of the largest output, 2^-7."""
    torch.testing.assert_close(y.float(), ref, atol=1e-2 * ref.abs().amax().item(), rtol=2**-7)


@pytest.mark.parametrize("rows", [1, 8])
def test_marlin_matches_the_grids_weights_and_a_zero_point_one_off_does_not(rows):
    _gpu_marlin()
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(2560, 2048, device="cuda", generator=gen) * 0.02).to(torch.bfloat16)
    bias = (torch.randn(2560, device="cuda", generator=gen) * 0.1).to(torch.bfloat16)  # Qwen2's q/k/v have one
    # positive activations, so that a shifted group cannot cancel out in the sum by chance
    x = torch.randn(rows, 2048, device="cuda", generator=gen).abs().to(torch.bfloat16)
    lin = MI.MarlinInt4(w, bias, 128, torch.bfloat16, keep_reference=True)
    ref = x.float() @ lin.reference().T + bias.float()
    _check(lin(x), ref)
    # the kernel's own weights (on the identity): the grid's, up to bf16 scales and products (2^-8 each)
    torch.testing.assert_close(lin.dequantized(), lin.reference(), atol=1e-6, rtol=2**-7)
    # Planted: the zero point of one group of one output column one off, as a repacking slip would leave it
    # (that output moves by one scale times the sum of the group's 128 inputs: about 0.7 here, against a
    # tolerance of about 0.05).
    zeros = lin.qt.zeros.T.to(torch.int32).contiguous()
    zeros[3, 5] = (zeros[3, 5] + 1) % 16
    _, MU, _ = MI.vllm_ops()
    lin.zeros = MU.marlin_zero_points(zeros, 2048 // 128, 2560, 4)
    with pytest.raises(AssertionError, match=f"Mismatched elements: {rows} / "):  # that column, in each row
        _check(lin(x), ref)
