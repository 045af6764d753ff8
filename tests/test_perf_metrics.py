"""Latency metrics from token marks: vLLM's definitions, checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_attnlab.perf.llm_metrics import Run, Summary, percentile


def test_run_definitions():
    r = Run(batch=4, prompt_len=100, marks=(0.5, 0.6, 0.8, 1.1))
    assert r.ttft == 0.5 and r.e2e == 1.1
    assert r.tpot == pytest.approx((1.1 - 0.5) / 3)
    assert r.itl == pytest.approx([0.1, 0.2, 0.3])
    assert r.tpot == pytest.approx(sum(r.itl) / len(r.itl))  # TPOT is the mean ITL of one request


def test_summary_throughputs():
    s = Summary([Run(2, 10, (0.1, 0.3, 0.5)), Run(2, 10, (0.3, 0.5, 0.7))]).as_dict()
    assert s["ttft"] == pytest.approx(0.2) and s["e2e_latency"] == pytest.approx(0.6)
    assert s["prefill_tok_s"] == pytest.approx(2 * 10 / 0.2)
    assert s["decode_tok_s"] == pytest.approx(2 * 2 / 0.4)
    assert s["e2e_tok_s"] == pytest.approx(2 * 3 / 0.6)
    assert s["itl_p50"] == pytest.approx(0.2)


def test_single_token_has_no_tpot():
    s = Summary([Run(1, 5, (0.2,))]).as_dict()
    assert math.isnan(s["tpot"]) and math.isnan(s["decode_tok_s"])


def test_marks_must_not_decrease():
    with pytest.raises(ValueError, match="must not decrease"):
        Run(1, 1, (0.3, 0.2))


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    xs = [0.7, 0.1, 0.4, 0.9, 0.3, 0.35, 2.0]
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
