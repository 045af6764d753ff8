"""`python -m pytest_attnlab history`: runs read from every input kind, a planted step marked at the right
run and only there, identical runs unmarked, GPUs and engines side by side, an offline page that a real
browser renders."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_attnlab.__main__ import main as tools_main
from pytest_attnlab.history.cli import main
from pytest_attnlab.history.runs import cell_of, load, load_all
from pytest_attnlab.history.series import build, thresholds
from pytest_attnlab.history.tables import engines, fleet, newest_changes

#: six identical perf runs and four with a planted 10 % decode slowdown, on the H200 (tests/data)
H200 = Path(__file__).parent / "data" / "h200_noise_gate"
IDENTICAL = sorted(H200.glob("identical-*"), key=lambda p: int(p.name.split("-")[1]))


def history(*argv: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    return main([str(a) for a in argv], out=out), out.getvalue()


def stepped(tmp: Path, runs: list[Path], first: int, factor: float, metric="tpot", path="fast", last=99) -> list[Path]:
    """Copies of real runs whose `metric` on `path` is scaled by `factor` (value and every round) from run
    `first` to run `last` (0-based): a step change planted into a series with the H200's real noise."""
    out = []
    for n, run in enumerate(runs):
        dst = tmp / f"run-{n + 1}" / "metrics.csv"
        dst.parent.mkdir(parents=True)
        with open(run / "metrics.csv", newline="") as src, open(dst, "w", newline="") as fh:
            reader = csv.DictReader(src)
            writer = csv.DictWriter(fh, fieldnames=reader.fieldnames)
            writer.writeheader()
            for row in reader:
                if first <= n <= last and row["metric"] == metric and row["backend"] == path:
                    row["value"] = repr(float(row["value"]) * factor)
                    row["samples"] = " ".join(repr(float(x) * factor) for x in row["samples"].split())
                writer.writerow(row)
        out.append(dst.parent)
    return out


def test_identical_runs_get_no_mark(tmp_path):
    code, text = history(*IDENTICAL, "-o", tmp_path / "h.html")
    assert code == 0
    assert "6 runs, 20 series, 0 changes beyond noise, 0 regressed" in text


@pytest.mark.parametrize("factor", [1.15, 0.85], ids=["slower", "faster"])
def test_a_planted_step_is_marked_at_its_run_and_nowhere_else(tmp_path, factor):
    # three runs before the step: compare's floor from them is 5.9 % (batch 1) and 0.3 % (batch 8) on the fast
    # path, 300 % and 190 % on the HF path
    runs = stepped(tmp_path, IDENTICAL, first=3, factor=factor)
    code, text = history(*runs, "-o", tmp_path / "h.html", "--metric", "tpot")
    assert code == 0
    marks = [ln.strip() for ln in text.splitlines()[1:]]
    verdict = "regressed" if factor > 1 else "improved"
    assert len(marks) == 2, text  # the fast path's two cells (batch 1 and 8), at run 4 only
    series = build(load_all(runs), thresholds(), {"tpot"})
    marked = {(s.cell, s.path): [n for n, p in enumerate(s.points) if p.mark] for s in series}
    assert marked == {
        ("suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b1-n64]", "fast"): [3],
        ("suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b8-n64]", "fast"): [3],
        ("suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b1-n64]", "hf"): [],
        ("suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b8-n64]", "hf"): [],
    }
    assert all(p.mark == verdict for s in series for p in s.marks)
    page = (tmp_path / "h.html").read_text()
    assert page.count('data-marks="2"') == 1


def test_a_step_inside_the_noise_is_not_marked(tmp_path):
    """The HF path's runs wander by far more than 5 % on the H200: a 5 % step there is not a finding."""
    runs = stepped(tmp_path, IDENTICAL, first=3, factor=1.05, path="hf")
    _, text = history(*runs, "-o", tmp_path / "h.html", "--metric", "tpot")
    assert "0 changes beyond noise" in text


def test_a_one_run_spike_is_not_a_step(tmp_path):
    """One slow run between normal ones: beyond the noise, but the series does not stay there."""
    runs = stepped(tmp_path, IDENTICAL, first=3, last=3, factor=1.3)
    _, text = history(*runs, "-o", tmp_path / "h.html", "--metric", "tpot")
    assert "0 changes beyond noise" in text


def test_the_newest_run_is_judged_as_compare_judges_it(tmp_path):
    runs = stepped(tmp_path, IDENTICAL, first=5, factor=1.3)  # only the newest run is slower
    series = build(load_all(runs), thresholds(), {"tpot"})
    changes = newest_changes(series, thresholds())
    assert [(c.series.path, c.line.status) for c in changes][:2] == [("fast", "REGRESSED"), ("fast", "REGRESSED")]
    # the HF path's runs wander by 10 % and more: its cells are UNGATED, with the change they can see
    assert {(c.series.path, c.line.status) for c in changes[2:]} == {("hf", "UNGATED")}
    assert all(c.line.detects().startswith("≥ ") for c in changes[2:])


def _benchmark_json(path: Path, gpu: str, mbu: float, tpot_ms: float, when: str, commit: str, prompt=512) -> Path:
    bench = {
        "fullname": f"suites/perf/test_generation_perf.py::test_generation[none-sdpa-p{prompt}-b1-n64-fast]",
        "stats": {"min": 0.1, "median": 0.11, "max": 0.12, "data": [0.1, 0.11, 0.12]},
        "extra_info": {"path": "fast", "tpot_ms": tpot_ms, "mbu_pct": mbu, "decode_tok_s": 1e3 / tpot_ms,
                       "samples": {"tpot_ms": [tpot_ms * 0.99, tpot_ms, tpot_ms * 1.01]}},
    }  # fmt: skip
    machine = {"attnlab": {"gpu": gpu, "driver": "580.1"}}  # perf/machine.py's block of machine_info
    doc = {"machine_info": machine, "commit_info": {"id": commit}, "datetime": when, "benchmarks": [bench]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_benchmark_json_and_storage_folder_runs(tmp_path):
    store = tmp_path / ".benchmarks" / "Linux-CPython-3.12-64bit"
    _benchmark_json(store / "0001_abc.json", "NVIDIA H100 80GB HBM3", 70.0, 2.64, "2026-12-01T10:00:00", "abc1234")
    _benchmark_json(store / "0002_def.json", "NVIDIA H200", 60.0, 2.14, "2026-12-02T10:00:00", "def5678")
    runs = load_all([tmp_path / ".benchmarks"])
    assert [(r.gpu, r.commit) for r in runs] == [("NVIDIA H100 80GB HBM3", "abc1234"), ("NVIDIA H200", "def5678")]
    cell = "suites/perf/test_generation_perf.py::test_generation[none-sdpa-p512-b1-n64]"
    tpot = runs[1].values[(cell, "tpot", "fast")]
    assert tpot.value == pytest.approx(2.14e-3) and tpot.band == pytest.approx((2.14e-3 * 0.99, 2.14e-3 * 1.01))
    # the fleet view ranks by the share of each GPU's own roofline, not by raw speed
    (_cell, _path, ranked), = fleet(runs)
    assert [g for g, _mbu, _tpot in ranked] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert {row[0] for row in engines(runs)} == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}


def test_a_report_folder_takes_its_gpu_from_benchmark_json(tmp_path):
    run = tmp_path / "r1"
    shutil.copytree(IDENTICAL[0], run)
    _benchmark_json(run / "benchmark.json", "NVIDIA H200", 60.0, 2.14, "2026-12-02T10:00:00", "def5678")
    (loaded,) = load(run)
    assert (loaded.gpu, loaded.commit) == ("NVIDIA H200", "def5678")
    (bare,) = load(IDENTICAL[0] / "metrics.csv")
    assert bare.gpu == "cuda:0"  # no machine info beside it: the device column


def test_cell_drops_only_the_path_parameter():
    assert cell_of("t.py::test_gen[none-sdpa-p128-b1-n64-hf]", "hf") == "t.py::test_gen[none-sdpa-p128-b1-n64]"
    assert cell_of("t.py::test_x[hf]", "hf") == "t.py::test_x"
    assert cell_of("t.py::test_x", "") == "t.py::test_x"


def test_bad_input_names_what_it_reads(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _ = history(tmp_path / "empty")
    assert code == 2
    assert "neither a report folder (no metrics.csv) nor a pytest-benchmark storage folder" in capsys.readouterr().err
    code, _ = history(IDENTICAL[0], "--threshold", "tpot5")
    assert code == 2
    assert "expected NAME:+N%" in capsys.readouterr().err


def test_listed_in_the_tools_help(capsys):
    with pytest.raises(SystemExit):
        tools_main(["--help"])
    assert "history" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tools_main(["history", "--help"])
    assert "pytest-benchmark storage folder" in capsys.readouterr().out


def test_page_is_offline_and_renders_in_a_browser(tmp_path):
    from pytest_attnlab.reports.browser import find_chromium, render

    runs = stepped(tmp_path, IDENTICAL, first=5, factor=1.15)  # the newest run is slower
    out = tmp_path / "history.html"
    assert history(*runs, "-o", out)[0] == 0
    page = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page fetches nothing from the network"
    if find_chromium() is None:
        pytest.skip("no chromium: apt-get install -y chromium (the page's offline checks above still ran)")
    rendered = render(out, tmp_path / "history.png", window="1400,3000")
    assert rendered.images == 5  # one figure per gated metric drawn (tpot, ttft and three tok/s)
    assert rendered.count(r'<h2 id="newest">Newest run against the one before: 2 regressed of 20 series') == 1
    assert rendered.count(r"<tr class=\"REGRESSED\">") == 2


def test_markdown_summary_lists_regressions_first(tmp_path, monkeypatch):
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    runs = stepped(tmp_path, IDENTICAL, first=5, factor=1.3)  # the newest run is 30 % slower on the fast path
    assert history(*runs, "-o", tmp_path / "h.html", "--markdown", tmp_path / "h.md")[0] == 0
    text = (tmp_path / "h.md").read_text()
    assert text.startswith("### History: 6 runs; newest") and "2 regressed of 20 series" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| verdict")]
    assert [r.split(" | ")[0] for r in rows[:2]] == ["| REGRESSED", "| REGRESSED"] and "fast" in rows[0]
    assert summary.read_text() == text  # the job summary gets the same table


def test_a_later_run_of_another_grid_does_not_hide_a_cell(tmp_path):
    a = _benchmark_json(tmp_path / "a.json", "NVIDIA H200", 60.0, 2.14, "2026-12-02T10:00:00", "a", prompt=512)
    b = _benchmark_json(tmp_path / "b.json", "NVIDIA H200", 55.0, 2.30, "2026-12-03T10:00:00", "b", prompt=128)
    runs = load_all([a, b])
    assert sorted(cell.split("[")[1] for _gpu, cell, _path, _values in engines(runs)) == [
        "none-sdpa-p128-b1-n64]", "none-sdpa-p512-b1-n64]"]
    assert len(fleet(runs)) == 2


def test_a_verdict_without_the_noise_between_runs_says_it_reads_rounds_only(tmp_path):
    """Two runs: a series has no noise between runs yet, so a REGRESSED read from one run's rounds says so (two
    identical .ci/gpu runs on the H200, 2026-12-05, read 18 such "regressions" of 5-13 % in TTFT and prefill);
    with six runs the same step is judged against the series' noise, with no qualifier. The ok lines fold away."""
    two = stepped(tmp_path / "two", IDENTICAL[:2], first=1, factor=1.3)
    assert history(*two, "-o", tmp_path / "two.html", "--markdown", tmp_path / "two.md")[0] == 0
    text = (tmp_path / "two.md").read_text()
    assert "on rounds only: under 3 earlier runs, the noise between runs is unknown" in text.splitlines()[0]
    assert "| REGRESSED (rounds only) | tpot |" in text
    page = (tmp_path / "two.html").read_text()
    assert "REGRESSED (rounds only)" in page and "series ok</summary>" in page
    six = stepped(tmp_path / "six", IDENTICAL, first=5, factor=1.3)
    assert history(*six, "-o", tmp_path / "six.html", "--markdown", tmp_path / "six.md")[0] == 0
    assert "rounds only" not in (tmp_path / "six.md").read_text().splitlines()[0]


def test_engines_markdown_puts_the_paths_side_by_side(tmp_path):
    """`--engines FILE`: docs/backends.md's table, one row per GPU x cell x path of the newest runs."""
    assert history(*IDENTICAL[:2], "-o", tmp_path / "h.html", "--engines", tmp_path / "engines.md")[0] == 0
    lines = (tmp_path / "engines.md").read_text().splitlines()
    assert lines[0].startswith("| GPU | cell | path | TTFT ms | TPOT ms | decode tok/s |")
    paths = {ln.split(" | ")[2] for ln in lines[2:]}
    assert paths == {"hf", "fast"} and len({ln.split(" | ")[0] for ln in lines[2:]}) == 1  # one GPU, these runs
