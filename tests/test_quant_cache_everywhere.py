"""--attnlab-quant-cache holds in every area that quantizes a case (issue 28): the perf grid used to call
`quantize(loaded, name)` with the cache always on, so `--attnlab-quant-cache off` still wrote the quantized
checkpoint there, and `rebuild` still read the stale one. Every area now asks `QuantSettings.quantize`."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

TESTS = """
def test_perf(perf_model, perf_quant):
    assert perf_quant == "rtn-int8"

def test_correctness(quantized_model, quantizer):
    assert quantizer == "rtn-int8"
"""


def _stored(cache: Path) -> list[Path]:
    return [p for p in (cache / "quant").rglob("*") if p.is_file()] if (cache / "quant").exists() else []


def test_quant_cache_off_stores_nothing_in_any_area(pytester, monkeypatch) -> None:
    """The perf grid and the correctness suite's `quantized_model` in one run with the cache off: nothing stored;
    then the perf test alone with the default (on): stored, so the check can see a store."""
    cache = pytester.path / "cache"
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(cache))
    pytester.makepyfile(test_q=TESTS)
    args = ("--attnlab-model", "random:tiny-qwen2", "--attnlab-device", "cpu", "--attnlab-quant", "rtn-int8",
            "-p", "no:cacheprovider", "--attnlab-report-dir", str(pytester.path / "reports"))  # fmt: skip
    result = pytester.runpytest_subprocess(*args, "--attnlab-quant-cache", "off")
    result.assert_outcomes(passed=2)
    assert _stored(cache) == [], f"--attnlab-quant-cache off stored {_stored(cache)}"
    result = pytester.runpytest_subprocess(*args, "-k", "perf")
    result.assert_outcomes(passed=1, deselected=1)
    assert _stored(cache), f"--attnlab-quant-cache on stored nothing under {cache}"
