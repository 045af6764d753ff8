"""--attnlab-quant-cache holds in every area that quantizes a case (issue 28): the perf grid used to call
`quantize(loaded, name)` with the cache always on, so `--attnlab-quant-cache off` still wrote the quantized
checkpoint there, and `rebuild` still read the stale one. Every area now asks `QuantSettings.quantize`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PERF_TEST = "def test_q(perf_model, perf_quant):\n    assert perf_quant == 'rtn-int8'\n"
CORRECTNESS_TEST = "def test_q(quantized_model, quantizer):\n    assert quantizer == 'rtn-int8'\n"


def _stored(cache: Path) -> list[Path]:
    return [p for p in (cache / "quant").rglob("*") if p.is_file()] if (cache / "quant").exists() else []


@pytest.mark.parametrize("area, test", [("perf", PERF_TEST), ("correctness", CORRECTNESS_TEST)])
def test_quant_cache_off_stores_nothing_in_any_area(pytester, monkeypatch, area: str, test: str) -> None:
    cache = pytester.path / "cache"
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(cache))
    pytester.makepyfile(test_q=test)
    args = ("--attnlab-model", "random:tiny-qwen2", "--attnlab-device", "cpu", "--attnlab-quant", "rtn-int8",
            "-p", "no:cacheprovider", "--attnlab-report-dir", str(pytester.path / "reports"))  # fmt: skip
    result = pytester.runpytest_subprocess(*args, "--attnlab-quant-cache", "off")
    result.assert_outcomes(passed=1)
    assert _stored(cache) == [], f"{area}: --attnlab-quant-cache off stored {_stored(cache)}"
    result = pytester.runpytest_subprocess(*args)  # the default, on: stored
    result.assert_outcomes(passed=1)
    assert _stored(cache), f"{area}: --attnlab-quant-cache on stored nothing under {cache}"
