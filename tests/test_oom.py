"""Out of device memory is one failed case: it names the case and the memory asked for, frees what the
case held, and the next cases run (simulated here with torch.OutOfMemoryError on CPU)."""

from __future__ import annotations

import pytest

CASES = """
import gc, weakref
import pytest, torch

held = {}
MESSAGE = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which "
           "1.25 GiB is free. Of the allocated memory 130.50 GiB is allocated by PyTorch, and 2.1 GiB is reserved")

@pytest.fixture
def huge_kv_cache():
    cache = torch.ones(10_000_000)
    held["fixture"] = weakref.ref(cache)
    raise torch.OutOfMemoryError(MESSAGE)

@pytest.mark.parametrize("batch", [256, 1], ids=["b256-p32768", "b1-p128"])
def test_cell(batch):
    activations = torch.ones(10_000_000)  # 40 MB held by this frame when the error is raised
    if batch == 256:
        held["call"] = weakref.ref(activations)
        raise torch.OutOfMemoryError(MESSAGE)

def test_setup_oom(huge_kv_cache):
    pass

def test_next_case_finds_the_memory_freed():
    gc.collect()
    assert held["call"]() is None and held["fixture"]() is None
"""


def test_out_of_memory_fails_one_case_and_frees_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells=CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-rfE")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_cell[[]b256-p32768[]]: out of device memory; asked for 20.00 GiB; 130.50 GiB already held by"
            " PyTorch. The memory was freed for the next case*"
        ]
    )
    result.stdout.fnmatch_lines(["*test_setup_oom: out of device memory; asked for 20.00 GiB*"])


def test_other_errors_keep_their_own_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    raise ValueError('shape mismatch 3 vs 4')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: shape mismatch 3 vs 4*"])
    result.stdout.no_fnmatch_line("*out of device memory*")
