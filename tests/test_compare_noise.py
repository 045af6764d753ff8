"""The noise-aware compare gate: a rank test on per-round samples, noise floors from identical runs,
and the planted decode slowdown (--attnlab-perf-plant-slowdown) it exists to catch."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from pathlib import Path

import pytest

from pytest_attnlab.compare import main
from pytest_attnlab.compare import noise as noise_file
from pytest_attnlab.compare.loaders import from_benchmark_json
from pytest_attnlab.compare.stats import gate_verdict, min_p, rank_test_p, relative_change_interval, t_quantile
from pytest_attnlab.metrics.row import COLUMNS, MetricRow


def write_run(path: Path, cells: dict[str, list[float]]) -> Path:
    """A metrics.csv with one `tpot` row per test: its mean as value, its rounds as samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for nodeid, rounds in cells.items():
            row = MetricRow(nodeid, "tpot", statistics.fmean(rounds), "s", context={"backend": "fast"}, samples=rounds)
            w.writerow(row.as_csv())
    return path


def gate(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([*argv, "-t", "tpot:+5%"], out=out), out.getvalue()


def rounds(level: float, spread: float, seed: int, n: int = 5) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.gauss(0, spread)) for _ in range(n)]


def test_rank_test_and_interval_are_scipy_s() -> None:
    assert rank_test_p([2, 3, 4, 5, 6], [1, 1.1, 1.2, 1.3, 1.4]) == pytest.approx(1 / 252)  # exact, no ties
    assert min_p(5, 5) == pytest.approx(1 / 252) and min_p(2, 2) == pytest.approx(1 / 6)
    assert rank_test_p([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)
    assert rank_test_p([1, 2, 3], [1, 2, 3]) > 0.5  # identical samples: no evidence at all
    assert rank_test_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    big = rank_test_p([x + 0.5 for x in range(20)], list(range(20)))  # normal approximation
    assert 0.3 < big < 0.5
    lo, hi = relative_change_interval([10, 10.1, 9.9], [11, 11.1, 10.9])
    assert 0.07 < lo <= 0.10 <= hi < 0.13
    assert t_quantile(0.999, 2) == pytest.approx(22.327, abs=1e-3) and t_quantile(0.99, 30) == pytest.approx(
        2.457, abs=1e-3
    )


def test_a_real_slowdown_is_caught_and_a_lucky_round_is_not(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a" / "metrics.csv", {"t::fast": rounds(0.010, 0.002, 1)})
    slow = write_run(tmp_path / "b" / "metrics.csv", {"t::fast": rounds(0.011, 0.002, 2)})  # +10 %
    rc, out = gate(str(base), str(slow))
    assert rc == 1 and "REGRESSED" in out  # every round slower: p = 1/252
    # one slow round (a hiccup) moves the mean by 8 % but not the median: no regression
    spike = rounds(0.010, 0.002, 3)
    spike[2] *= 1.4
    assert statistics.fmean(spike) / statistics.fmean(rounds(0.010, 0.002, 1)) > 1.05
    rc, out = gate(str(base), str(write_run(tmp_path / "c" / "metrics.csv", {"t::fast": spike})))
    assert rc == 0, out


def test_overlapping_rounds_are_not_significant(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a" / "metrics.csv", {"t::hf": [0.020, 0.024, 0.028, 0.021, 0.027]})
    cur = write_run(tmp_path / "b" / "metrics.csv", {"t::hf": [0.0255, 0.020, 0.029, 0.022, 0.0265]})
    rc, out = gate(str(base), str(cur))
    assert "not significant" in out and rc == 0, out
    rc, _ = gate(str(base), str(cur), "--alpha", "1")  # without the test the 6 % median change gates
    assert rc == 1


def test_noise_floor_from_identical_runs(tmp_path: Path) -> None:
    """Host-bound HF: each run's rounds agree, but runs wander by ~15 %; the floor learnt from three
    identical runs keeps a fourth from crying wolf, and a planted 10 % on the quiet fast path still fails."""
    runs = []
    for i, level in enumerate((0.0202, 0.0235, 0.0280, 0.0215)):
        cells = {"t::hf": rounds(level, 0.003, i), "t::fast": rounds(0.0024, 0.002, 10 + i)}
        runs.append(write_run(tmp_path / f"r{i}" / "metrics.csv", cells))
    rc, out = gate(str(runs[0]), str(runs[2]))
    assert rc == 1 and "REGRESSED" in out  # without floors: a false alarm
    floors = tmp_path / "noise.json"
    out = io.StringIO()
    assert noise_file.main([str(r) for r in runs[:3]] + ["-o", str(floors)], out=out) == 0
    doc = json.loads(floors.read_text())
    hf = next(e for e in doc["floors"] if e["test"] == "t::hf")
    sd = statistics.stdev(math.log(v) for v in hf["values"])  # a run's value: the median of its rounds
    assert hf["values"][0] == pytest.approx(statistics.median(rounds(0.0202, 0.003, 0)))
    assert (hf["df"], hf["cells"]) == (2, 1) and hf["sd"] == pytest.approx(sd)  # t::hf pools with no other test
    assert hf["floor"] == pytest.approx(t_quantile(noise_file.DEFAULT_CONFIDENCE, 2) * sd * math.sqrt(2))
    rc, out = gate(str(runs[0]), str(runs[2]), "--noise", str(floors))
    assert rc == 0 and "UNGATED" in out and "  hf tpot: detects ≥" in out, out  # blind, and says so
    planted = write_run(tmp_path / "p" / "metrics.csv",
                        {"t::hf": rounds(0.0215, 0.003, 7), "t::fast": rounds(0.00264, 0.002, 8)})  # fmt: skip
    rc, out = gate(str(runs[3]), str(planted), "--noise", str(floors))
    assert rc == 1 and out.count("REGRESSED") == 1, out
    # noise.json beside BASE is picked up on its own, and --no-noise turns it off
    (runs[0].parent / "noise.json").write_text(floors.read_text())
    assert gate(str(runs[0].parent), str(runs[2]))[0] == 0
    assert gate(str(runs[0].parent), str(runs[2]), "--no-noise")[0] == 1


def test_noise_needs_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "a" / "metrics.csv", {"t::x": [1.0, 1.0]})
    assert noise_file.main([str(run), "-o", str(tmp_path / "n.json")]) == 2
    assert "at least 2 runs" in capsys.readouterr().err


def test_benchmark_json_samples(tmp_path: Path) -> None:
    doc = {"benchmarks": [{"fullname": "t::b", "stats": {"mean": 0.2, "stddev": 0.01, "data": [0.19, 0.2, 0.21]},
                           "extra_info": {"tpot_ms": 2.4, "samples": {"tpot_ms": [2.3, 2.4, 2.5]}}}]}  # fmt: skip
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    run = from_benchmark_json(path)
    assert run[("t::b", "tpot_ms", "")].samples == (2.3, 2.4, 2.5)
    assert run[("t::b", "mean", "")].samples == (0.19, 0.2, 0.21)
    assert run[("t::b", "stddev", "")].samples == ()
    # the default thresholds name tpot; benchmark JSON calls it tpot_ms
    slower = json.loads(json.dumps(doc))
    slower["benchmarks"][0]["extra_info"] = {"tpot_ms": 2.7, "samples": {"tpot_ms": [2.65, 2.7, 2.75]}}
    (tmp_path / "c.json").write_text(json.dumps(slower))
    rc, out = gate(str(path), str(tmp_path / "c.json"))
    assert rc == 1 and "tpot_ms" in out


def test_planted_slowdown_holds_each_decode_step_for_its_fraction() -> None:
    """The plant's arithmetic with its hold recorded instead of spent (no timing on a shared CPU): no hold
    before the first token, F x the unplanted step before every later one, learnt from the previous
    round without feeding its own hold back."""
    from pytest_attnlab.perf.llm_metrics import Run
    from pytest_attnlab.perf.plant import PlantedSlowdown

    plant = PlantedSlowdown(0.1, "cpu")
    held: list[float] = []
    plant._hold = held.append  # type: ignore[method-assign]
    marks: list[int] = []

    def one_round(step_s: float, n: int = 5) -> Run:
        mark = plant.wrap(lambda: marks.append(len(held)))
        for _ in range(n):
            mark()
        hold = held[-1] if held else 0.0
        return Run(1, 4, tuple(0.02 + i * (step_s + hold) for i in range(n)))

    plant.observe(one_round(0.004))  # the warmup round: nothing to learn from yet, no hold
    assert held == [] and marks == [0] * 5
    plant.observe(one_round(0.004))
    assert held == pytest.approx([0.0004] * 4)  # tokens 2..5, a tenth of the 4 ms step each
    assert marks[5:] == [0, 1, 2, 3, 4]  # the hold comes before its token's mark, never before the first
    held.clear()
    plant.observe(one_round(0.004))  # the planted round's TPOT includes the hold: it is not compounded
    assert held == pytest.approx([0.0004] * 4)


H200_RUNS = Path(__file__).parent / "data" / "h200_noise_gate"


def test_h200_replay_per_gated_cell() -> None:
    """Replays scripts/gpu/noise_gate.sh's H200 runs (random:qwen2.5-0.5b-instruct, prompt 128, batch 1 and 8,
    64 tokens, hf and fast, 5 rounds; 6 identical runs, 4 with a planted 10 % decode slowdown, twice tpot's 5 %
    threshold) through the gate (compare.tally, .ci/gpu's noise stage) with floors from 4 other identical runs.
    Each cell counts on its own: a cell gated in every trial cries wolf in at most 1 identical pair in 20 and,
    where the plant slows it by twice its threshold (tpot, decode_tok_s), catches at least 19 in 20."""
    from pytest_attnlab.compare import tally as T

    t = T.tally(H200_RUNS, ["tpot:+5%", "ttft:+10%", "tok_s:-5%"], floor_runs=4)
    cells = {(test.split("[")[1].rstrip("]"), metric): c for (kind, test, metric), c in t.cells.items()
             if kind == "metrics.csv, 1 vs 1"}  # fmt: skip
    gated = {k for k, c in cells.items() if c.gated}
    assert gated == {(f"none-sdpa-p128-b{b}-n64-fast", m) for b in (1, 8) for m in ("tpot", "decode_tok_s")}
    for name, c in cells.items():
        assert c.pairs == 15 and c.false_alarms * 20 <= c.pairs, (name, c)  # blind cells never cry wolf either
        if name in gated:
            assert c.detected * 20 >= 19 * c.planted == 19 * 24, (name, c)
        else:
            assert min(c.detects) > 0.05, (name, c)  # and each says what it can detect
    hf_tpot = cells[("none-sdpa-p128-b1-n64-hf", "tpot")]
    assert 0.5 < statistics.median(hf_tpot.detects) < 5 and hf_tpot.detected == 0  # not credited with fast's catches
    # the same runs without noise floors: host-bound HF timings wander between runs, and the gate cries wolf
    bare = T.tally(H200_RUNS, ["tpot:+5%", "ttft:+10%", "tok_s:-5%"], floor_runs=0)
    assert sum(c.false_alarms for c in bare.cells.values()) > 15




def test_the_measuring_gates_fail_beyond_pass_within_and_say_when_they_cannot_decide() -> None:
    """suites/perf/test_measurement_quality.py's 1 % gates (fixture timing error, monitor overhead) read every
    round: a fixture that adds 3 % to each round fails, a clean one with 0.2 % spread passes, and rounds that
    drift by a few % between sets (as on the H100 and H200) are undecided, not a coin toss."""
    raw = rounds(0.175, 0.002, 11, 10)
    assert gate_verdict(raw, [x * 1.03 for x in rounds(0.175, 0.002, 12, 10)], 1.0)[0] == "beyond"  # planted 3 %
    assert gate_verdict(raw, [x * 0.97 for x in rounds(0.175, 0.002, 13, 10)], 1.0)[0] == "beyond"  # 3 % missing
    assert gate_verdict(raw, rounds(0.175, 0.002, 14, 10), 1.0)[0] == "within"
    drift = rounds(0.170, 0.002, 15, 5) + rounds(0.180, 0.002, 16, 5)  # two sets 6 % apart
    kind, point, lo, hi = gate_verdict(raw, drift, 1.0)
    assert kind == "undecided" and lo < 1.0 < hi, (point, lo, hi)
    # one-sided (monitor overhead): a faster run with the monitor on is no overhead
    assert gate_verdict(raw, [x * 0.97 for x in rounds(0.175, 0.002, 13, 10)], 1.0, two_sided=False)[0] == "within"
