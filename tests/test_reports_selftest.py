"""The gate's self-test has its own section of the report (issue 26, item 8), never "pass" lines or bars.

A planted bug's rows (tagged `selftest=NAME`, or a quant / attention named `mutant:NAME`) used to join
the results table as lines like "mutant:linears-x1.10 ... 0.9652 (gate 0.95) ... pass", as if the bug
had passed, and took bars of the quality plot. Each check below is run on a real report and again with
the bug planted back in (the classification switched off), where it must fail.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from report_runs import Run, md_table, run_files

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports import html_summary, plots, selftest, summary
from pytest_attnlab.reports.layout import ReportLayout
from pytest_attnlab.reports.rows import summarize

RUN = """
import pytest
from pytest_attnlab.reports.selftest import record_verdict

def test_user_quality(metrics):
    metrics.record("logits_cosine", 0.9991, threshold=0.95)

def test_user_quant(metrics):
    metrics.update_context(quant="rtn-int8")
    metrics.record("logits_cosine", 0.9987, threshold=0.95)

# the older tag (test_quant_gate_kill.py): the test passes when the gate fails on the bug
def test_mutant_killed(metrics):
    metrics.update_context(quant="mutant:linears-x1.10")
    metrics.record("logits_cosine", 0.9652, threshold=0.95, bug="every linear x1.10")
    metrics.record("local_error_ratio", 4.1, threshold=2.0, bug="every linear x1.10")
    metrics.record("layer_local_error", 0.02, threshold=0.01, layer=3)
    assert 4.1 > 2.0

def test_mutant_survived(metrics):
    metrics.update_context(quant="mutant:o_proj-15-x1.02")
    metrics.record("logits_cosine", 0.9990, threshold=0.95)
    metrics.record("local_error_ratio", 1.3, threshold=2.0)
    assert 1.3 > 2.0, "planted bug passed the gate"

def test_mutant_not_applicable(metrics):
    metrics.update_context(quant="mutant:rope-shift")
    pytest.skip("planted bug 'rope-shift' does not apply: no rotary embedding")

# the explicit convention (decode-time mutants): selftest=NAME and selftest_killed
def test_decode_mutant(metrics):
    metrics.update_context(selftest="cache-position-off-by-one", bug="decode writes the KV cache one slot late")
    metrics.record("greedy_agreement", 0.41, threshold=0.99)
    record_verdict(metrics, "cache-position-off-by-one", killed=True)

def test_decode_mutant_raised(metrics):  # before its first row: listed from its context
    metrics.update_context(selftest="left-pad-mask")
    raise RuntimeError("padded batch: shapes differ")

def test_decode_mutant_below_resolution(metrics):  # test_decode_gate_kill's excuse: named, not killed
    metrics.update_context(selftest="rope-angles-bf16")
    metrics.record("logits_cosine", 0.9999, threshold=0.95)
    pytest.xfail("layer_diff in bfloat16 cannot resolve it on this model")

def test_kill_rate(metrics):
    metrics.record("mutant_kill_rate", 0.5, "fraction", threshold=1.0, mutants=4)
"""

#: The bug the checks guard against, planted back in through a `-p` plugin: no row is the self-test's.
PLANTED = """
from pytest_attnlab.reports import selftest
selftest.is_selftest = lambda row: False
selftest.selftest_name = lambda context: None
"""

USER_LINES = {("smollm2-135m-instruct", "none", "sdpa"), ("smollm2-135m-instruct", "rtn-int8", "sdpa")}
EXPECTED = {  # planted bug -> verdict, as the section must list it
    "o_proj-15-x1.02": "survived (test failed)",
    "left-pad-mask": "survived (test failed)",
    "rope-shift": "not run (test skipped)",
    "rope-angles-bf16": "below resolution (test xfailed)",
    "linears-x1.10": "killed (test passed)",
    "cache-position-off-by-one": "killed (selftest_killed)",
}

def _run(root: Path, *plugins: str) -> Run:
    return run_files(root, {"test_run.py": RUN, "planted_bugs.py": PLANTED}, "--html", "out/report.html", *plugins)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("selftest"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("planted"), "-p", "planted_bugs")


def check_md_results_are_the_users(out: Path) -> None:
    body = md_table((out / "summary.md").read_text(), "Results")
    assert {tuple(c[:3]) for c in body} == USER_LINES, body
    assert [c[-1] for c in body] == ["pass (1/1)", "pass (1/1)"]  # no planted bug's test counted in them


def check_md_selftest_section(out: Path) -> None:
    md = (out / "summary.md").read_text()
    assert "## Gate self-test: 2 of 6 planted bugs killed" in md
    body = md_table(md, "Gate self-test")
    assert {c[0]: c[-1] for c in body} == EXPECTED
    first = ["o_proj-15-x1.02", "left-pad-mask", "rope-shift", "rope-angles-bf16"]  # what needs attention first
    assert [c[0] for c in body][:4] == first
    linears = next(c for c in body if c[0] == "linears-x1.10")
    assert linears[1] == "every linear x1.10"
    assert linears[2] == "logits_cosine 0.9652 >= 0.95: within; local_error_ratio 4.1 <= 2: CROSSED"
    assert "- mutant_kill_rate = 0.5 (gate 1)" in md
    conclusion = "survived: o_proj-15-x1.02, left-pad-mask; not run: rope-shift; below resolution: rope-angles-bf16."
    assert conclusion in md  # in the conclusions


def check_json(out: Path) -> None:
    doc = json.loads((out / "experiments" / "default.json").read_text())
    assert {(s["model"], s["quant"], s["attention"]) for s in doc["summary"]} == USER_LINES
    assert {s["name"]: f"{s['verdict']} ({s['source']})" for s in doc["selftest"]} == EXPECTED


def check_html(out: Path) -> None:
    page = (out / "report.html").read_text()
    block = page[page.index('id="attnlab-summary"') :]
    main = block[: block.index("</table>")]
    lines = {tuple(re.findall(r"<td[^>]*>(.*?)</td>", tr)[:3]) for tr in re.findall(r"<tr class=.*?</tr>", main)}
    assert lines == USER_LINES
    section = block[block.index('id="attnlab-selftest"') :]
    assert "gate self-test: 2 of 6 planted bugs killed" in section
    classes = re.findall(r'<tr class="attnlab-([\w-]+)"><td>([^<]*)</td>', section)
    assert classes == [("survived", "o_proj-15-x1.02"), ("survived", "left-pad-mask"), ("not-run", "rope-shift"),
                       ("below-resolution", "rope-angles-bf16"), ("killed", "linears-x1.10"),
                       ("killed", "cache-position-off-by-one")]  # fmt: skip


CHECKS = [check_md_results_are_the_users, check_md_selftest_section, check_json, check_html]


def test_run_outcomes(run: Run) -> None:
    assert "2 failed, 5 passed, 1 skipped, 1 xfailed" in run[1].stdout, run[1].stdout[-3000:]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_report(run: Run, check: Callable[[Path], None]) -> None:
    check(run[0])


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_report_check_catches_its_planted_bug(planted: Run, check: Callable[[Path], None]) -> None:
    assert "2 failed, 5 passed, 1 skipped" in planted[1].stdout, planted[1].stdout[-3000:]
    with pytest.raises((AssertionError, ValueError)):  # ValueError: a section that is not there
        check(planted[0])


# -- units, each with its planted bug -------------------------------------------------------------


def row(nodeid: str, metric: str, value: float, threshold: float | None = None, **ctx: Any) -> MetricRow:
    context = {"model": "m", "quant": "none", "attention": "sdpa", **ctx}
    return MetricRow(nodeid, metric, value, "", threshold, context=context)


def mixed_rows() -> list[MetricRow]:
    return [
        row("t::user", "logits_cosine", 0.999, 0.95),
        row("t::q", "logits_cosine", 0.998, 0.95, quant="rtn-int4-g64"),
        row("t::kill[a]", "logits_cosine", 0.9652, 0.95, quant="mutant:linears-x1.10"),
        row("t::kill[b]", "logits_cosine", 0.93, 0.95, attention="mutant:causal-mask-off"),
        row("t::dec", "greedy_agreement", 0.4, 0.99, selftest="bf16-only"),
        row("t::dec", selftest.KILLED_METRIC, 1.0, 1.0, selftest="bf16-only"),
        row("t::rate", "mutant_kill_rate", 1.0, 1.0),
    ]


@pytest.mark.parametrize(
    ("context", "name"),
    [
        ({"quant": "mutant:linears-x1.10"}, "linears-x1.10"),
        ({"attention": "mutant:causal-mask-off"}, "causal-mask-off"),
        ({"quant": "rtn-int8", "selftest": "dropped-bias"}, "dropped-bias"),
        ({"quant": "rtn-int8"}, None),
        ({"quant": "no-mutant:here", "selftest": ""}, None),
        ({}, None),
    ],
)
def test_selftest_name(context: dict[str, str], name: str | None) -> None:
    assert selftest.selftest_name(context) == name


def no_selftest_in_user_lines(rows: Sequence[MetricRow], outcomes: dict[str, str]) -> None:
    part = selftest.partition(rows, outcomes)
    lines = summarize(part.rows, part.outcomes)
    assert {(ln.quant, ln.attention) for ln in lines} == {("none", "sdpa"), ("rtn-int4-g64", "sdpa")}
    assert not any(r.metric == "mutant_kill_rate" for r in part.rows)


def test_planted_bugs_never_join_the_user_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = {"t::user": "passed", "t::q": "passed", "t::kill[a]": "passed", "t::kill[b]": "failed"}
    no_selftest_in_user_lines(mixed_rows(), outcomes)
    monkeypatch.setattr(selftest, "is_selftest", lambda r: False)  # the bug: every row is the user's
    with pytest.raises(AssertionError):
        no_selftest_in_user_lines(mixed_rows(), outcomes)


def test_a_failed_planted_bug_does_not_fail_the_users_line() -> None:
    """A survivor's failed test recorded only self-test rows: it must not become a failing user orphan."""
    outcomes = {"t::user": "passed", "t::kill[b]": "failed"}
    contexts = {"t::kill[b]": {"model": "m", "quant": "none", "attention": "mutant:causal-mask-off"}}
    part = selftest.partition(mixed_rows(), outcomes, contexts)
    assert "t::kill[b]" not in part.outcomes and "t::kill[b]" not in part.contexts
    verdicts = {ln.quant: ln.verdict for ln in summarize(part.rows, part.outcomes, part.contexts)}
    assert verdicts == {"none": "pass", "rtn-int4-g64": "-"}


def test_a_planted_bug_that_raised_before_recording_is_listed() -> None:
    contexts = {"t::kill[c]": {"model": "m", "quant": "mutant:wrong-grid", "attention": "sdpa"}}
    part = selftest.partition(mixed_rows(), {"t::kill[c]": "failed"}, contexts)
    line = next(ln for ln in part.lines if ln.name == "wrong-grid")
    assert (line.verdict, line.source, line.nodeids) == ("survived", "test failed", ("t::kill[c]",))
    assert part.lines[0] is line  # survivors lead


def test_the_recorded_verdict_wins_over_the_test_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """A localisation test fails when the bug is killed but misnamed: killed stays killed, and a survivor
    recorded as 0 is a survivor even when its test did not assert it."""
    data = [
        row("t::loc", "logits_cosine", 0.7, 0.95, selftest="q_proj-0-swapped"),
        row("t::loc", selftest.KILLED_METRIC, 1.0, 1.0, selftest="q_proj-0-swapped"),
        row("t::quiet", selftest.KILLED_METRIC, 0.0, 1.0, selftest="noise-0.5pct"),
    ]

    def check() -> None:
        part = selftest.partition(data, {"t::loc": "failed", "t::quiet": "passed"})
        assert {ln.name: ln.verdict for ln in part.lines} == {"q_proj-0-swapped": "killed", "noise-0.5pct": "survived"}
        assert part.headline() == "1 of 2 planted bugs killed; survived: noise-0.5pct"

    check()
    monkeypatch.setattr(selftest, "KILLED_METRIC", "not_recorded")  # the bug: the outcome alone decides
    with pytest.raises(AssertionError):
        check()


def test_figures_say_which_gate_the_bug_crossed() -> None:
    cos = selftest.Figure("logits_cosine", 0.9652, "", 0.95)
    ratio = selftest.Figure("local_error_ratio", 4.1, "", 2.0)
    other = selftest.Figure("some_new_metric", 3.0, "", 1.0)
    named = selftest.Figure("first_divergent_layer", 15, "", None)
    assert (cos.crossed, ratio.crossed, other.crossed, named.crossed) == (False, True, None, None)
    assert other.describe() == "some_new_metric 3 (gate 1)"  # unknown direction: not judged
    assert named.describe() == "first_divergent_layer 15"


def _plotted(monkeypatch: pytest.MonkeyPatch) -> list[list[MetricRow]]:
    """Spy on the run plots: the rows each one is drawn from."""
    seen: list[list[MetricRow]] = []
    monkeypatch.setattr(plots, "available", lambda: True)
    monkeypatch.setattr(plots, "RUN_PLOTS", {"spy": lambda rows: seen.append(list(rows))})
    return seen


def plots_draw_no_planted_bug(seen: list[list[MetricRow]]) -> None:
    assert seen, "no run plot was drawn"
    for rows in seen:
        assert not [r for r in rows if selftest.is_selftest(r)], "a planted bug's row reached a plot"
        assert len(rows) == 2


ENV = {"command": "pytest", "python": "3", "platform": "x", "gpus": [], "torch": {}, "packages": {}}


@pytest.mark.parametrize("where", ["summary.md", "report.html"])
def test_run_plots_draw_only_the_users_rows(where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def draw() -> None:
        if where == "summary.md":
            summary.write(ReportLayout(tmp_path), mixed_rows(), {}, ENV, None, "r1")
        else:
            html_summary.render(mixed_rows(), {})

    seen = _plotted(monkeypatch)
    draw()
    plots_draw_no_planted_bug(seen)
    is_selftest = selftest.is_selftest
    monkeypatch.setattr(selftest, "is_selftest", lambda r: False)  # the bug: the plots get every row
    seen.clear()
    draw()
    monkeypatch.setattr(selftest, "is_selftest", is_selftest)
    with pytest.raises(AssertionError, match="reached a plot"):
        plots_draw_no_planted_bug(seen)


def test_quality_chart_of_a_kill_run_has_no_mutant_bar() -> None:
    pytest.importorskip("matplotlib")
    from pytest_attnlab.reports.quality_plot import quality_chart

    chart = quality_chart(selftest.partition(mixed_rows()).rows)
    assert chart is not None and chart.labels == ("none", "rtn-int4-g64")


def test_report_renders_the_selftest_apart_in_chromium(run: Run, tmp_path: Path) -> None:
    from pytest_attnlab.reports import browser

    if browser.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium): the rendered-page check only")
    page = browser.render(run[0] / "report.html", tmp_path / "report.png")
    assert page.verdicts("model x quant x attention") == ["pass", "pass"]
    assert page.verdicts("gate self-test: 2 of 6 planted bugs killed") == [
        "survived", "survived", "not-run", "below-resolution", "killed", "killed",
    ]  # fmt: skip
    assert page.screenshot is not None and page.screenshot.read_bytes()[:4] == b"\x89PNG"


def test_a_run_of_planted_bugs_only_says_so(tmp_path: Path) -> None:
    """suites/correctness/test_quant_gate_kill.py alone: no user line, and the table says why."""
    data = [r for r in mixed_rows() if selftest.is_selftest(r)]
    outcomes = {"t::kill[a]": "passed", "t::kill[b]": "passed", "t::dec": "passed"}
    summary.write(ReportLayout(tmp_path), data, outcomes, ENV, None, "r1")
    md = (tmp_path / "summary.md").read_text()
    assert "every row is the gate's self-test (below)" in md
    assert "## Gate self-test: 3 of 3 planted bugs killed" in md
    assert html.escape("every row is the gate's self-test (below)") in html_summary.render(data, outcomes)
