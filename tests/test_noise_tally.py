"""The noise stage's tally (python -m pytest_attnlab noise-tally): per gated cell, false alarms over identical
pairs and detections of a planted slowdown, replayed on recorded H200 runs (tests/data/h200_noise_gate: 6
identical runs and 4 with a planted 10 % decode slowdown, twice the TPOT threshold)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from pytest_attnlab.compare import cli
from pytest_attnlab.compare import tally as NT

H200_RUNS = Path(__file__).parent / "data" / "h200_noise_gate"
THRESHOLDS = ["tpot:+5%", "ttft:+10%", "tok_s:-5%"]
ONE = "metrics.csv, 1 vs 1"
FAST_B8 = "suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b8-n64-fast]"


@pytest.fixture(scope="module")
def recorded() -> NT.Tally:
    return NT.tally(H200_RUNS, THRESHOLDS, floor_runs=3)


def test_recorded_runs_every_gated_cell_meets_the_bar(recorded: NT.Tally) -> None:
    """Each cell on its own (a run caught by one cell no longer hides the blind ones)."""
    gated = {k: c for k, c in recorded.cells.items() if c.gated}
    assert gated, "no cell is gated at all"
    for (_kind, test, metric), c in gated.items():
        assert c.pairs == 15 and c.false_alarms <= c.pairs * NT.MAX_FALSE_ALARM_RATE, (test, metric, c)
        if NT._moved(metric):
            assert c.planted == 24 and c.detected >= c.planted * NT.MIN_DETECTION_RATE, (test, metric, c)
    # the fast path's batch-8 TPOT is the cell the planted slowdown was made for: gated and caught every time
    tpot = recorded.cells[(ONE, FAST_B8, "tpot")]
    assert tpot.gated and (tpot.false_alarms, tpot.detected, tpot.planted) == (0, 24, 24)
    assert not recorded.misses()


def test_recorded_runs_name_each_ungated_cell_with_what_it_detects(recorded: NT.Tally) -> None:
    out = io.StringIO()
    NT.print_table(recorded, out)
    text = out.getvalue()
    for (_kind, test, metric), c in recorded.cells.items():
        if not c.gated:
            assert min(c.detects) > float(c.threshold.split(":")[1].strip("+-%")) / 100, (test, metric)
            row = next(ln for ln in text.splitlines() if NT._cell_name(test) in ln and f" {metric} " in ln)
            assert "UNGATED" in row and "detects >= " in row
    n_gated = sum(c.gated for c in recorded.cells.values())
    assert f"{n_gated} gated cells, {len(recorded.cells) - n_gated} UNGATED, 0 missing the bar" in text
    assert "too few trials for the bar" in text  # 15 pairs of 6 runs: the stage itself runs 7 (21 pairs)


def _shift(root: Path, run: str, test: str, metric: str, factor: float) -> None:
    path = root / run / "metrics.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["nodeid"] == test and row["metric"] == metric:
            row["value"] = str(float(row["value"]) * factor)
            row["samples"] = " ".join(str(float(x) * factor) for x in row["samples"].split())
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _few_runs(root: Path) -> Path:
    """4 identical and 2 planted of the recorded runs (6 pairs, 8 planted trials): enough to plant a bug in."""
    for name in ("identical-1", "identical-2", "identical-3", "identical-4", "planted-1", "planted-2"):
        shutil.copytree(H200_RUNS / name, root / "runs" / name)
    return root / "runs"


def test_planted_bug_a_gate_that_cries_wolf_misses_the_bar(tmp_path: Path) -> None:
    """One 'identical' run 10 % slower in one cell: that cell's false alarms go past 1 in 20, exit 1."""
    _few_runs(tmp_path)
    _shift(tmp_path / "runs", "identical-3", FAST_B8, "tpot", 1.10)
    t = NT.tally(tmp_path / "runs", THRESHOLDS, floor_runs=0)  # no floors: the rank test and threshold alone
    tpot = t.cells[(ONE, FAST_B8, "tpot")]
    assert tpot.false_alarms > tpot.pairs * NT.MAX_FALSE_ALARM_RATE
    assert (ONE, FAST_B8, "tpot") in t.misses()


def test_planted_bug_a_blind_gate_misses_the_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A compare that reads every regression as 'within noise' (the PASS-while-blind bug): 0 detections, exit 1."""

    def blind(argv: list[str]) -> int:
        rc = cli.main(argv, out=io.StringIO())
        path = Path(argv[argv.index("--json") + 1])
        lines = json.loads(path.read_text())
        path.write_text(
            json.dumps([{**ln, "status": ln["status"].replace("REGRESSED", "within noise")} for ln in lines])
        )
        return 0 if rc == 1 else rc

    t = NT.tally(_few_runs(tmp_path), THRESHOLDS, floor_runs=0, compare=blind)
    tpot = t.cells[(ONE, FAST_B8, "tpot")]
    assert tpot.detected == 0 and (ONE, FAST_B8, "tpot") in t.misses()


def test_cli_exit_status_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_attnlab.__main__ import main

    assert main(["noise-tally", str(tmp_path)]) == 2
    assert "no identical-N run" in capsys.readouterr().err
    (tmp_path / "identical-1").mkdir()
    shutil.copy(H200_RUNS / "identical-1" / "metrics.csv", tmp_path / "identical-1")
    assert main(["noise-tally", str(tmp_path)]) == 2
    assert "1 complete identical runs with metrics.csv; need 5" in capsys.readouterr().err


def _has_ab() -> bool:
    return any("--ab" in a.option_strings for a in cli.build_parser()._actions)


def test_recorded_runs_ab_trials_per_cell() -> None:
    """A/B as gpu.yml gates a pull request: 3 identical runs against 3 others (20 splits) and against 3 planted."""
    if not _has_ab():
        pytest.skip("compare --ab (A/B mode) lands with the perfgate branch; only this check needs it")
    t = NT.tally(H200_RUNS, THRESHOLDS, floor_runs=0, ab=3, ab_cap=20)  # 20 splits of 6 runs, 20 of 80 planted
    ab = {k: c for k, c in t.cells.items() if k[0] == "metrics.csv, A/B 3 vs 3"}
    assert ab and all(c.pairs == 20 and c.planted == 20 for c in ab.values())
    tpot = ab[("metrics.csv, A/B 3 vs 3", FAST_B8, "tpot")]
    assert tpot.gated and tpot.false_alarms <= 1 and tpot.detected >= 19
    assert not [k for k in t.misses() if k[0] == "metrics.csv, A/B 3 vs 3"]


def test_each_cell_is_counted_on_its_own(tmp_path: Path) -> None:
    """A planted run caught on one cell says nothing of another: with the slowdown taken out of the batch-1 cell
    of the planted runs, that cell detects nothing while batch 8 still detects every trial."""
    runs = _few_runs(tmp_path)
    fast_b1 = FAST_B8.replace("-b8-", "-b1-")
    for planted in ("planted-1", "planted-2"):
        _shift(runs, planted, fast_b1, "tpot", 1 / 1.10)
    t = NT.tally(runs, THRESHOLDS, floor_runs=0)
    b1, b8 = t.cells[(ONE, fast_b1, "tpot")], t.cells[(ONE, FAST_B8, "tpot")]
    assert b8.detected == b8.planted == 8
    assert b1.detected <= 1 and (ONE, fast_b1, "tpot") in t.misses()


def test_ungated_reads_compares_own_verdict_and_falls_back_to_the_floor() -> None:
    """compare with UNGATED (its `detects`): a blind cell's REGRESSED is a catch, not blindness; an older compare
    without it: a floor above a relative threshold is UNGATED."""
    line = {"threshold": "tpot:+5%", "floor": 0.4}
    assert NT._ungated({**line, "status": "UNGATED", "detects": 0.43}) == 0.43
    assert NT._ungated({**line, "status": "REGRESSED", "detects": 0.43}) is None  # 2.5x slower still fails
    assert NT._ungated({**line, "status": "within noise"}) == 0.4
    assert NT._ungated({**line, "floor": 0.03, "status": "ok"}) is None
    assert NT._ungated({"threshold": "cosine:-0.01", "floor": 0.4, "status": "ok"}) is None  # absolute: no %


def test_benchmark_json_names_count_as_the_metrics_the_plant_moves() -> None:
    """benchmark.json's tpot_ms is tpot: its detections count (the H200's noise stage read 'not planted' there)."""
    assert NT._moved("tpot_ms") and NT._moved("tpot") and NT._moved("decode_tok_s")
    assert not NT._moved("ttft_ms") and not NT._moved("prefill_tok_s")


def test_a_changed_variant_is_no_trial() -> None:
    """compare did not judge a cell whose variant changed: it is neither a false alarm's pair nor a detection."""
    t = NT.Tally()
    line = {"test": FAST_B8, "metric": "tpot", "threshold": "tpot:+5%", "floor": None, "status": "variant changed"}
    NT._record(t, ONE, [line], planted=False)
    NT._record(t, ONE, [line], planted=True)
    assert t.cells == {}
