"""How much the measuring itself costs: the fixture's timing vs raw device timing of the same
work, and the monitor's sampling thread's effect on TPOT. Both are gated at 1 % on CUDA, where
the fixture's clock is CUDA events and a sampling thread must not slow the GPU's work; on CPU
both are recorded beside the 1 % threshold, not asserted: there the model and the monitor share
the same few cores with whatever else runs, so their noise, not the measuring, decides the figure.

The gate reads every round of two interleaved sets a side (`compare.stats.gate_verdict`): it fails where
the 95 % interval of the change of medians lies wholly beyond 1 %, passes where it lies wholly within, and
where the rounds spread wider than 1 % it xfails saying so, with the interval. A host-bound 135M decode
drifts by a few % between sets of rounds: one set each read +1.01 % on the H200 and -2.32 % on an H100
(2026-12-05), a pass/fail coin toss on noise before this."""

from __future__ import annotations

import statistics

import pytest

from pytest_attnlab.compare.stats import gate_verdict
from pytest_attnlab.perf.bench import make_prompt
from pytest_attnlab.perf.timing import clock_for

TIMING_ERROR_PCT = 1.0  # |fixture E2E - raw CUDA-event E2E| / raw
MONITOR_OVERHEAD_PCT = 1.0  # TPOT with the monitor sampling vs without


def _gated(device: str) -> bool:
    """The 1 % gates hold on CUDA; on CPU the figures are recorded only (see the module docstring)."""
    return str(device).startswith("cuda")


@pytest.fixture
def decode_cell(perf_settings):
    """The cell both checks use: batch 1, the smallest prompt, the largest output length."""
    path = "fast" if "fast" in perf_settings.paths else perf_settings.paths[0]
    return {
        "path": path,
        "batch": 1,
        "prompt_len": min(perf_settings.prompt_lens),
        "new_tokens": max(max(perf_settings.new_tokens), 2),
    }


def _gate(check: str, verdict: tuple[str, float, float, float], gate_pct: float, what: str) -> None:
    """Fail beyond the gate, xfail naming `check` where the rounds cannot decide it, pass within."""
    kind, point, lo, hi = verdict
    figure = f"{what}: {point:+.2f} % (95 % interval [{lo:+.2f}, {hi:+.2f}] %, gate {gate_pct} %)"
    assert kind != "beyond", figure
    if kind == "undecided":
        pytest.xfail(f"{check} cannot be decided on this machine: the rounds spread wider than the gate; {figure}")


def _raw_e2e(gb, loaded, cell, rounds):
    """Time whole generations with one clock pair around each, no per-token marks (per-round seconds)."""
    model = loaded.model
    impl = gb.path_factory(cell["path"])
    impl.prepare(model, cell["batch"], cell["prompt_len"], cell["new_tokens"])
    ids = make_prompt(model.config.vocab_size, cell["batch"], cell["prompt_len"], gb.device)
    out = []
    for _ in range(rounds):
        clock = clock_for(gb.device, 1)
        clock.start()
        impl.generate(ids, cell["new_tokens"], lambda: None)
        clock.mark()
        out.append(clock.stop()[0])
    return out


def test_fixture_timing_error(perf_model, generation_benchmark, perf_settings, decode_cell, metrics):
    rounds = perf_settings.rounds
    fixtures, raws = [], []
    for _ in range(2):  # interleaved sets: drift between sets of rounds hits both alike
        m = generation_benchmark.measure(perf_model, rounds=rounds, **decode_cell)
        fixtures += m.samples()["e2e_latency"]
        raws += _raw_e2e(generation_benchmark, perf_model, decode_cell, rounds)
    verdict = gate_verdict(raws, fixtures, TIMING_ERROR_PCT)
    fixture, raw = statistics.median(fixtures), statistics.median(raws)
    ctx = {**decode_cell, "rounds": rounds}
    metrics.update_context(backend=decode_cell["path"])
    metrics.record("e2e_latency_fixture", fixture, "s", samples=fixtures, **ctx)
    metrics.record("e2e_latency_raw_events", raw, "s", samples=raws, **ctx)
    gated = _gated(generation_benchmark.device)
    metrics.record(
        "timing_error", verdict[1], "%", threshold=TIMING_ERROR_PCT, asserted=gated, verdict=verdict[0],
        interval=f"[{verdict[2]:+.2f}, {verdict[3]:+.2f}]", **ctx,
    )  # fmt: skip
    assert fixture > 0 and raw > 0
    if gated:
        what = f"the fixture's E2E {fixture * 1e3:.3f} ms vs the raw CUDA-event E2E {raw * 1e3:.3f} ms (medians)"
        _gate("timing_error", verdict, TIMING_ERROR_PCT, what)


def test_monitor_overhead(perf_model, generation_benchmark, perf_settings, decode_cell, metrics):
    from pytest_attnlab.perf.monitors import MonitorUnavailable, Sampler, pick

    try:
        monitor = pick(
            "auto" if perf_settings.monitor == "none" else perf_settings.monitor, generation_benchmark.device
        )
    except MonitorUnavailable as exc:
        pytest.skip(str(exc))
    rounds = perf_settings.rounds
    tpot = {"off": [], "on": []}
    samples = 0
    for _ in range(2):  # interleave off/on so drift hits both alike
        tpot["off"] += generation_benchmark.measure(perf_model, rounds=rounds, **decode_cell).samples()["tpot"]
        with Sampler(monitor, perf_settings.monitor_interval_s) as sampler:
            tpot["on"] += generation_benchmark.measure(perf_model, rounds=rounds, **decode_cell).samples()["tpot"]
        samples += len(sampler.timeline)
    verdict = gate_verdict(tpot["off"], tpot["on"], MONITOR_OVERHEAD_PCT, two_sided=False)  # only a slowdown
    off, on, overhead = statistics.median(tpot["off"]), statistics.median(tpot["on"]), verdict[1]
    ctx = {**decode_cell, "monitor": monitor.name, "interval_ms": perf_settings.monitor_interval_s * 1e3}
    metrics.update_context(backend=decode_cell["path"])
    metrics.record("tpot_monitor_off", off, "s", **ctx)
    metrics.record("tpot_monitor_on", on, "s", **ctx)
    gated = _gated(generation_benchmark.device)
    metrics.record(
        "monitor_overhead", overhead, "%", threshold=MONITOR_OVERHEAD_PCT, asserted=gated, verdict=verdict[0],
        interval=f"[{verdict[2]:+.2f}, {verdict[3]:+.2f}]", **ctx,
    )  # fmt: skip
    metrics.record("monitor_samples", samples, "samples", **ctx)
    assert samples > 0
    if gated:
        what = f"TPOT {on * 1e3:.3f} ms with the {monitor.name} monitor sampling vs {off * 1e3:.3f} ms without"
        _gate("monitor_overhead", verdict, MONITOR_OVERHEAD_PCT, what)
