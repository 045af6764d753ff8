"""The perf grid: model x quantizer x attention x prompt length x batch x output length x decode path.

Choose the grid with --attnlab-perf-models/-prompt-lens/-batch/-new-tokens/-path and the quant and
attention areas' --attnlab-quant / --attnlab-attn. Every cell runs through pytest-benchmark
(--benchmark-json) and writes TTFT, TPOT, ITL percentiles, tok/s, MBU/MFU and peak memory to
metrics.csv, with the device monitor's timeline beside it.
"""

from __future__ import annotations

import time

#: the reported E2E against pytest-benchmark's own host timer around each round: the host round
#: holds the E2E plus the clock's start/stop synchronisation and bookkeeping (microseconds)
HOST_CLOCK_REL_TOL = 0.05
HOST_CLOCK_ABS_TOL_S = 2e-3


def test_generation(
    perf_model,
    perf_quant,
    perf_attn,
    perf_prompt_len,
    perf_batch,
    perf_new_tokens,
    perf_path,
    generation_benchmark,
    gpu_monitor,
    metrics,
):
    metrics.update_context(**{**perf_model.context(), "quant": perf_quant, "attention": perf_attn})
    start = time.perf_counter()
    m = generation_benchmark(
        perf_model,
        prompt_len=perf_prompt_len,
        batch=perf_batch,
        new_tokens=perf_new_tokens,
        path=perf_path,
        attention=perf_attn,
        quant=perf_quant,
        group=f"{perf_model.spec.label}-{perf_quant}-{perf_attn}-",
    )
    wall = time.perf_counter() - start
    lat = m.latency()
    assert tuple(m.tokens.shape) == (perf_batch, perf_new_tokens)
    assert all(len(r.marks) == perf_new_tokens for r in m.runs)
    assert 0 < lat["ttft"] <= lat["e2e_latency"]
    _check_against_host_clock(m, wall, generation_benchmark.benchmark, metrics)
    if perf_new_tokens > 1:
        assert lat["itl_p50"] <= lat["itl_p90"] <= lat["itl_p99"] <= lat["itl_max"]
        mbu = m.roofline()["mbu"][0]
        assert mbu > 0
        if m.peaks.bandwidth_source == "nvml":  # a data-sheet peak bounds MBU; a measured CPU copy does not
            assert mbu < 100, f"MBU {mbu:.1f} % above NVML's peak: the bytes per step are over-counted"
    assert gpu_monitor.timeline, "the monitor took no sample"


def _check_against_host_clock(m, wall: float, benchmark, metrics) -> None:
    """The token clock's E2E (CUDA events on GPU) checked by clocks it does not share.

    Every timed round's E2E lies inside the wall-clock time of the whole call; and where
    pytest-benchmark timed the rounds (perf_counter around each), its mean round matches the mean
    E2E within HOST_CLOCK_REL_TOL + HOST_CLOCK_ABS_TOL_S (a missing synchronisation, a wrong unit
    or a lost mark moves one clock and not the other).
    """
    e2e = m.latency()["e2e_latency"]
    assert sum(r.e2e for r in m.runs) <= wall, (
        f"the rounds' E2E sum {sum(r.e2e for r in m.runs):.4f} s > wall {wall:.4f} s"
    )
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is None:  # --benchmark-disable: pytest-benchmark timed nothing
        return
    host = stats.mean
    limit = HOST_CLOCK_REL_TOL * e2e + HOST_CLOCK_ABS_TOL_S
    metrics.record("e2e_vs_host_round", host - e2e, "s", threshold=limit, host_round_s=host, e2e_s=e2e)
    assert abs(host - e2e) <= limit, (
        f"reported E2E {e2e * 1e3:.3f} ms vs pytest-benchmark's host-timed round {host * 1e3:.3f} ms "
        f"(tolerance {limit * 1e3:.3f} ms)"
    )
