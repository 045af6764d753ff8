"""The report leads with what failed (issue 16, item 7), from a real run with failures and as units.

Each property is checked against the bug it guards against: the bug is planted (monkeypatched back
in) and the same check must fail on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from report_runs import Run, md_table, run_files

from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.reports import perf_table, plots, quality_plot, rows
from pytest_attnlab.reports.context import context_of_test
from pytest_attnlab.reports.rows import SummaryLine, summarize

RUN = """
import json, re
import pytest

def test_quality_passes(metrics):
    metrics.record("logits_cosine", 0.999, threshold=0.95)

def test_default_context_raises_before_recording(metrics):
    raise RuntimeError("model load failed")  # none/sdpa: that line recorded rows from a passing test

@pytest.mark.parametrize("quant", ["gptq-int4"])
def test_param_raises_before_recording(metrics, quant):
    raise RuntimeError("no kernel for " + quant)

def test_context_set_then_raises(metrics):
    metrics.update_context(quant="awq-int4")
    raise ValueError("calibration diverged")

@pytest.fixture
def broken():
    raise OSError("weights not found")

@pytest.mark.parametrize("attention", ["mla_128"])
def test_setup_error(broken, metrics, attention):
    pass

@pytest.mark.parametrize("path", ["hf", "fast"])
@pytest.mark.parametrize("prompt_len", [16, 64])
def test_perf(metrics, path, prompt_len):
    metrics.update_context(backend=path)
    base = {"hf": 0.09, "fast": 0.05}[path]
    rounds = [base, base + 0.02, base + 0.04]
    cell = dict(batch=1, prompt_len=prompt_len, new_tokens=8)
    metrics.record("ttft", 0.2 + prompt_len * 1e-3, "s", **cell)
    metrics.record("tpot", sum(rounds) / 3, "s", samples=rounds, **cell)
    metrics.record("decode_tok_s", 3 / sum(rounds), "tokens/s", **cell)
    metrics.record("mbu", 1.0, "%", **cell)

def _monitor(metrics, session):
    mon = session.report_dir / "monitor"
    mon.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\\w.-]", "_", metrics.nodeid)
    timeline = [{"t": 0.1 * k, "cpu_percent": 10.0 * k} for k in range(4)]
    (mon / f"{name}.json").write_text(json.dumps({"nodeid": metrics.nodeid, "timeline": timeline}))

def test_monitored(metrics, attnlab_session):
    _monitor(metrics, attnlab_session)
    metrics.record("peak_memory", 2**27, "bytes")

def test_skipped_after_monitor(metrics, attnlab_session):
    _monitor(metrics, attnlab_session)
    pytest.skip("fast path: quant none only")

@pytest.mark.xfail(strict=True, raises=AssertionError)
def test_xfail_keeps_its_monitor(metrics, attnlab_session):
    _monitor(metrics, attnlab_session)
    assert False, "known gap"
"""

BROKEN_MODULE = "import not_a_module_attnlab\n"

FAILING = {  # (model, quant, attention) lines that must read fail
    ("smollm2-135m-instruct", "none", "sdpa"),
    ("smollm2-135m-instruct", "gptq-int4", "sdpa"),
    ("smollm2-135m-instruct", "awq-int4", "sdpa"),
    ("smollm2-135m-instruct", "none", "mla_128"),
}


#: The bugs the checks below guard against, planted back in through a `-p` plugin.
PLANTED = """
from pytest_attnlab.reports import html_summary, perf_table, rows

rows.failed_without_rows = lambda *a: []  # only tests that recorded rows count for a line
perf_table.cell_of = lambda r: (r.backend, "", "", "")  # perf lines per path only: cells averaged together
_extras = html_summary.add_plot_extras
html_summary.add_plot_extras = lambda report, nodeid, rows, core, skipped=False: _extras(report, nodeid, rows, core)
"""

def _run(root: Path, *plugins: str) -> Run:
    files = {"test_run.py": RUN, "test_broken.py": BROKEN_MODULE, "planted_bugs.py": PLANTED}
    return run_files(root, files, "--continue-on-collection-errors", *plugins)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("failures"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("planted"), "-p", "planted_bugs")


def check_md_failed_lines(out: Path) -> None:
    md = (out / "summary.md").read_text()
    body = md_table(md, "Results")
    by_line = {tuple(cells[:3]): cells[-1] for cells in body}
    for key in FAILING:
        assert by_line.get(key, "").startswith("fail"), (key, by_line)
    assert by_line[("smollm2-135m-instruct", "none", "sdpa")] == "fail (6/7)"  # 1 quality + 4 perf + monitored
    assert [cells[-1].split()[0] for cells in body] == ["fail"] * 4  # failing lines lead; none reads pass
    doc = json.loads((out / "experiments" / "default.json").read_text())
    results = {(s["model"], s["quant"], s["attention"]): s["result"] for s in doc["summary"]}
    assert {k for k, v in results.items() if v == "fail"} == FAILING


def check_html_failed_lines(out: Path) -> None:
    page = (out / "report.html").read_text()
    summary = page[page.index('id="attnlab-summary"') :]
    assert summary.index('id="attnlab-failures"') < summary.index("<table")
    main = summary[: summary.index("</table>")]
    trs = re.findall(r'<tr class="attnlab-(\w+)">(.*?)</tr>', main)
    verdicts = {tuple(re.findall(r"<td[^>]*>(.*?)</td>", tr)[:3]): v for v, tr in trs}
    assert {k for k, v in verdicts.items() if v == "fail"} == FAILING
    assert all(v == "fail" for v, _ in trs)


def check_perf_cells(out: Path) -> None:
    md = (out / "summary.md").read_text()
    assert "TTFT" not in md[md.index("## Results") : md.index("## Perf")]  # never averaged over cells
    body = md_table(md, "Perf (per decode path and cell)")
    cells = [tuple(c[3:7]) for c in body]
    assert sorted(cells) == sorted((p, "1", n, "8") for p in ("hf", "fast") for n in ("16", "64"))
    hf16 = next(c for c in body if tuple(c[3:7]) == ("hf", "1", "16", "8"))
    assert hf16[8] == "110 ms (90–130)"  # TPOT: mean of the rounds and their min–max
    assert hf16[-2:] == ["3", "pass (1/1)"]


def check_no_skipped_monitor_plot(out: Path) -> None:
    page = (out / "report.html").read_text()
    names = re.findall(r"&#34;name&#34;: &#34;(monitor: [^&]*)&#34;", page)
    # the skipped test's timeline is left out; an xfail's is a measurement and stays
    assert names == [f"monitor: test_run.py__test_{t}.json" for t in ("monitored", "xfail_keeps_its_monitor")]


CHECKS = [check_md_failed_lines, check_html_failed_lines, check_perf_cells, check_no_skipped_monitor_plot]


def test_run_has_its_failures(run: Run) -> None:
    out, proc = run
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "3 failed, 6 passed, 1 skipped, 1 xfailed, 2 errors" in proc.stdout, proc.stdout[-1500:]


def test_failures_open_summary_md(run: Run) -> None:
    md = (run[0] / "summary.md").read_text()
    assert md.index("## Failed and errored tests (5)") < md.index("## Results")
    assert "- `test_broken.py`: error in collection: ModuleNotFoundError: No module named 'not_a_module_attnlab'" in md
    assert "- `test_run.py::test_setup_error[mla_128]`: error in setup: OSError: weights not found" in md


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_report(run: Run, check: Callable[[Path], None]) -> None:
    check(run[0])


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_report_check_catches_its_planted_bug(planted: Run, check: Callable[[Path], None]) -> None:
    assert "3 failed, 6 passed, 1 skipped, 1 xfailed, 2 errors" in planted[1].stdout, planted[1].stdout[-1500:]
    with pytest.raises(AssertionError):
        check(planted[0])


def test_report_renders_failures_first_in_chromium(run: Run, tmp_path: Path) -> None:
    from pytest_attnlab.reports import browser

    if browser.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = browser.render(run[0] / "report.html", tmp_path / "report.png")
    assert page.failures_lead
    assert page.failed_listed == 5
    assert page.verdicts("model x quant x attention") == ["fail"] * 4
    assert page.screenshot is not None and page.screenshot.read_bytes()[:4] == b"\x89PNG"


# -- units, each with its planted bug -------------------------------------------------------------


def row(nodeid: str, metric: str, value: float, **kw: object) -> MetricRow:
    ctx = {"model": "m", "quant": "none", "attention": "sdpa", "backend": "hf", "device": "cpu", "dtype": "f32"}
    extra = {k: v for k, v in kw.items() if k not in ctx and k not in ("samples", "unit", "threshold")}
    ctx.update({k: v for k, v in kw.items() if k in ctx})
    return MetricRow(
        nodeid, metric, value, str(kw.get("unit", "s")), kw.get("threshold"),  # type: ignore[arg-type]
        context={**ctx, **extra}, samples=tuple(kw.get("samples", ())),  # type: ignore[arg-type]
    )  # fmt: skip


def failing_lines_read_fail(lines: list[SummaryLine], failed: set[tuple[str, str, str]]) -> None:
    verdicts = {(ln.model, ln.quant, ln.attention): ln.verdict for ln in lines}
    for key in failed:
        assert verdicts.get(key) == "fail", f"{key} reads {verdicts.get(key)!r}"


def test_failed_test_without_rows_fails_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    data = [row("t::ok", "logits_cosine", 0.99, unit="")]
    outcomes = {"t::ok": "passed", "t::raised": "failed", "t::q": "failed"}
    contexts = {"t::raised": {"model": "m", "quant": "none", "attention": "sdpa"}, "t::q": {"model": "m", "quant": "x"}}
    failed = {("m", "none", "sdpa"), ("m", "x", "sdpa")}
    failing_lines_read_fail(summarize(data, outcomes, contexts), failed)
    monkeypatch.setattr(rows, "failed_without_rows", lambda *a: [])  # the bug: only tests with rows count
    with pytest.raises(AssertionError, match=r"reads (None|'pass')"):
        failing_lines_read_fail(summarize(data, outcomes, contexts), failed)


def test_context_of_a_failed_test() -> None:
    defaults = {"model": "m", "quant": "none", "attention": "sdpa"}
    assert context_of_test({"perf_quant": "rtn-int8", "perf_attn": "mqa"}, defaults)["quant"] == "rtn-int8"
    assert context_of_test({"perf_attn": "mqa"}, defaults)["attention"] == "mqa"
    named = type("Variant", (), {"name": "sliding_window_256"})()
    assert context_of_test({"variant_attention": named}, defaults)["attention"] == "sliding_window_256"
    # the recorder's own update wins; a recorder value equal to the default does not undo the parameter
    assert context_of_test({"quant": "a"}, defaults, {"quant": "b"})["quant"] == "b"
    assert context_of_test({"quant": "a"}, defaults, {"quant": "none"})["quant"] == "a"
    assert context_of_test({"seed": 3}, defaults) == defaults


def test_failed_context_survives_xdist_serialisation() -> None:
    """xdist ships reports to the controller as JSON: the context attached on the worker must arrive."""
    report = pytest.TestReport("t.py::x", ("t.py", 1, "x"), {}, "failed", None, "call")
    report.attnlab_context = {"model": "m", "quant": "gptq-int4", "attention": "sdpa"}
    back = pytest.TestReport._from_json(report._to_json())
    assert back.attnlab_context == report.attnlab_context


def perf_rows() -> list[MetricRow]:
    out = []
    for path, tpot in (("hf", 0.09), ("fast", 0.05)):
        for p in (16, 64):
            out.append(row(f"t::p[{path}-{p}]", "tpot", tpot + p * 1e-4, backend=path, prompt_len=p, batch=1))
    return out


def test_perf_lines_never_mix_paths_or_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    def check() -> None:
        lines = perf_table.perf_lines(perf_rows())
        assert len(lines) == 4, [ln.cell for ln in lines]
        assert {ln.cell for ln in lines} == {(p, "1", n, "") for p in ("hf", "fast") for n in ("16", "64")}

    check()
    monkeypatch.setattr(perf_table, "cell_of", lambda r: (r.backend, "", "", ""))  # the bug: group per path only
    with pytest.raises(AssertionError):
        check()


def test_perf_conclusion_compares_inside_a_cell() -> None:
    data = [
        *perf_rows(),
        row("t::w", "tpot", 0.08, attention="sliding_window_64", backend="hf", prompt_len=16, batch=1),
    ]
    (text,) = perf_table.perf_conclusions(perf_table.perf_lines(data), ("none", "sdpa"))
    assert text == (
        "TPOT: best none/sliding_window_64 on m in 1 of 1 cells compared; "
        "largest gap at hf b1 p16: 80 ms vs none/sdpa 91.6 ms (-12.7%)."
    )


def test_perf_plot_bars_span_the_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    data = [
        row("t::a", "tpot", 0.16, prompt_len=16, samples=(0.06, 0.26)),
        row("t::b", "tpot", 0.06, prompt_len=64, samples=(0.05, 0.07)),
        row("t::c", "tpot", 0.10, prompt_len=32),  # no samples: the spread of the two rows at p32
        row("t::d", "tpot", 0.12, prompt_len=32),
    ]

    def check() -> None:
        name, series = plots._series(data, ("tpot",), rows.PROMPT_LEN_KEYS, lambda r: "v")
        got = [(p.x, p.lo, p.hi) for p in series["v"]]
        assert got == [(16, 0.06, 0.26), (32, 0.10, 0.12), (64, 0.05, 0.07)]
        fig = plots.line_figure(data, ("tpot",), rows.PROMPT_LEN_KEYS, lambda r: "v", "TPOT", "prompt")
        (bars,) = fig.axes[0].containers
        segments = bars.lines[2][0].get_segments()
        spans = [y for s in segments for y in (s[0][1], s[1][1])]
        assert spans == pytest.approx([0.06, 0.26, 0.10, 0.12, 0.05, 0.07])
        assert "min–max over rounds" in fig.axes[0].get_title()

    check()
    monkeypatch.setattr(plots, "value_spread", lambda rs: None)  # the bug: a bare mean per point
    with pytest.raises(AssertionError):
        check()


def quality_rows(**varying: list[str]) -> list[MetricRow]:
    ((axis, names),) = varying.items()
    return [row(f"t::{n}", "logits_cosine", 0.99 - 0.01 * i, unit="", **{axis: n}) for i, n in enumerate(names)]


@pytest.mark.parametrize(
    ("data", "axes", "labels"),
    [
        (
            quality_rows(attention=["sdpa", "sliding_window_64", "mla_128"]),
            ("attention variant",),
            ["sdpa", "sliding_window_64", "mla_128"],
        ),
        (
            quality_rows(quant=["none", "rtn-int8", "awq-int4-g128"]),
            ("quantizer",),
            ["none", "rtn-int8", "awq-int4-g128"],
        ),
        (
            [*quality_rows(quant=["none", "rtn-int8"]), *quality_rows(attention=["mqa"])],
            ("quantizer", "attention variant"),
            ["none / sdpa", "rtn-int8 / sdpa", "none / mqa"],
        ),
    ],
    ids=["attention", "quant", "both"],
)
def test_quality_plot_groups_by_the_axis_that_varies(
    data: list[MetricRow], axes: tuple[str, ...], labels: list[str]
) -> None:
    chart = quality_plot.quality_chart(data)
    assert chart is not None and chart.axes == axes
    assert list(chart.labels) == labels
    assert chart.title == f"logits_cosine by {' x '.join(axes)}"


def test_quality_plot_of_an_attention_run_is_not_one_quantizer_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    data = quality_rows(attention=["sdpa", "sliding_window_64", "mla_128"])
    assert quality_plot.quality_chart(data).labels == ("sdpa", "sliding_window_64", "mla_128")  # type: ignore[union-attr]
    # the bug: the bars always follow the quantizer, so an attention run drew one group labelled "none"
    monkeypatch.setattr(quality_plot, "AXES", (("quant", "quantizer"),))
    assert quality_plot.quality_chart(data) is None


def tick_labels_inside(fig: object) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width = fig.bbox.width  # type: ignore[attr-defined]
    ax = fig.axes[0]  # type: ignore[attr-defined]
    lo, hi = ax.get_xlim()
    ticks = [*ax.get_yticklabels(), *(t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi)]
    for text in ticks:
        box = text.get_window_extent(canvas.get_renderer())
        assert box.x0 >= 0 and box.x1 <= width, f"{text.get_text()!r} cut off: {box.x0:.0f}..{box.x1:.0f} of {width}"


@pytest.mark.filterwarnings("ignore:constrained_layout not applied")  # the planted bug's one-line label
def test_quality_plot_labels_are_not_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    long = "suites/correctness/test_attention.py::test_attention_variant_quality[block_sparse_b32_k4-prompt-long]"
    data = quality_rows(attention=["sdpa", long, "mla_joint_256"])
    tick_labels_inside(quality_plot.quality_figure(quality_plot.quality_chart(data)))
    monkeypatch.setattr(quality_plot, "LABEL_WIDTH", 10_000)  # the bug: long names on one line
    data = quality_rows(attention=["sdpa", long * 2])
    with pytest.raises(AssertionError, match="cut off"):
        tick_labels_inside(quality_plot.quality_figure(quality_plot.quality_chart(data)))
