"""The default CUDA perf grid is green by default (issue 27): what it cannot run skips with its reason, a
real error still fails, and the help states the grid it runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from pytest_attnlab.paths import fast_weights as FW
from pytest_attnlab.perf import options as perf_options

ROOT = Path(__file__).resolve().parents[1]


def _decode_gemv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("decode_gemv_suite", ROOT / "suites/perf/test_decode_gemv.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Linear(torch.nn.Linear):
    def tensors(self) -> list[torch.Tensor]:
        return [self.weight]


def test_int4_group_that_does_not_divide_the_width_skips_with_its_reason() -> None:
    """The embedded model's width 576 is 4.5 groups of 128: tinygemm-g128 skips, naming the shape."""
    mod = _decode_gemv()
    x = torch.randn(1, 576)
    with pytest.raises(pytest.skip.Exception, match="int4 group 128 does not divide the input width 576"):
        mod._calls("tinygemm-g128", "qkv", [_Linear(576, 64)], x)


def test_int4_group_that_divides_the_width_runs() -> None:
    mod = _decode_gemv()
    x = torch.randn(1, 576)
    calls, nbytes, first = mod._calls("tinygemm-g32", "o", [_Linear(576, 64)], x)
    assert len(calls) == 1 and nbytes > 0 and isinstance(first, FW.Int4)
    assert calls[0]().shape == (1, 64)


def test_marlin_skips_off_cuda_with_its_reason() -> None:
    mod = _decode_gemv()
    with pytest.raises(pytest.skip.Exception, match="marlin-g128 on o: Marlin runs on CUDA; the weight is on cpu"):
        mod._calls("marlin-g128", "o", [_Linear(512, 64)], torch.randn(1, 512))


def test_a_real_int4_error_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only UnsupportedShape is a skip: a kernel that raises anything else fails the test."""
    mod = _decode_gemv()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(FW, "Int4", broken)
    try:
        mod._calls("tinygemm-g32", "o", [_Linear(512, 64)], torch.randn(1, 512))
    except pytest.skip.Exception as exc:  # a BaseException: pytest.raises would let it skip this test
        pytest.fail(f"a kernel error was skipped, not failed: {exc}")
    except RuntimeError as exc:
        assert "illegal memory access" in str(exc)
    else:
        pytest.fail("the kernel error vanished")


@pytest.mark.parametrize("flag,key", [("perf-prompt-lens", "prompt_lens"), ("perf-batch", "batch"),
                                      ("perf-new-tokens", "new_tokens"), ("perf-rounds", "rounds")])  # fmt: skip
def test_help_states_the_auto_grid(flag: str, key: str) -> None:
    spec = next(o for o in perf_options.PERF_OPTIONS if o.name == flag)
    grid = perf_options.AUTO_GRID
    assert f"auto: {grid['cpu'][key]} on CPU, {grid['cuda'][key]} on CUDA" in spec.help


def test_cuda_auto_grid_runs_five_rounds(pytester: pytest.Pytester) -> None:
    """5 rounds a cell on CUDA: 3 against 3 reach the rank test's alpha only with every round in order."""
    config = pytester.parseconfigure("--attnlab-device", "cpu")
    assert perf_options.PerfSettings.from_config(config, "cuda").rounds == 5
    assert perf_options.PerfSettings.from_config(config, "cpu").rounds == 2
