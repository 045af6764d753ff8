"""report.html summary and plots, summary.md, experiment JSON and Prometheus output from a real run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DEMO = """
import pytest

def test_layers(metrics):
    metrics.update_context(quant="rtn-int8")
    for i in range(6):
        metrics.record("layer_cosine", 1 - 0.001 * i * i, layer=i)
    metrics.record("logits_cosine", 0.991, threshold=0.95)

@pytest.mark.parametrize("quant", ["none", "rtn-int4"])
def test_quality(metrics, quant):
    metrics.update_context(quant=quant)
    metrics.record("logits_cosine", {"none": 1.0, "rtn-int4": 0.96}[quant], threshold=0.95)
    metrics.record("perplexity", {"none": 10.0, "rtn-int4": 11.5}[quant])

@pytest.mark.parametrize("attn", ["sdpa", "sliding_window_256"])
def test_perf(metrics, attn, attnlab_session):
    metrics.update_context(attention=attn)
    for p in (32, 64, 128):
        metrics.record("tpot", 0.01 + p * (2e-5 if attn == "sdpa" else 1e-5), "s", prompt_len=p)
    for b in (1, 2, 4):
        metrics.record("decode_tok_s", 50.0 * b, "tokens/s", batch=b)
    metrics.record("peak_memory", 2**27, "bytes")
    # a monitor timeline as the perf monitor writes it: REPORT_DIR/monitor/<safe nodeid>.json
    mon = attnlab_session.report_dir / "monitor"
    mon.mkdir(parents=True, exist_ok=True)
    import json, re
    timeline = [{"t": 100 + 0.1 * k, "gpu_util": 10 * k, "gpu_mem_bytes": 2**20 * k} for k in range(5)]
    name = re.sub(r"[^\\w.-]", "_", metrics.nodeid)
    (mon / f"{name}.json").write_text(json.dumps({"nodeid": metrics.nodeid, "timeline": timeline}))

def test_fails(metrics):
    metrics.update_context(quant="broken")
    metrics.record("logits_cosine", 0.5, threshold=0.95)
    assert False, "cosine below the gate"
"""


@pytest.fixture(scope="module")
def demo_run(pytester_module: tuple[pytest.Pytester, object]) -> tuple[Path, object]:
    return pytester_module


@pytest.fixture(scope="module")
def pytester_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One subprocess run of the demo suite shared by the checks below (keeps the suite fast)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("demo")
    (root / "test_demo.py").write_text(DEMO)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_demo.py",
           "--attnlab-report-dir", "out", "--attnlab-prometheus-textfile", "out/attnlab.prom"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=False)
    return root / "out", proc


def test_run_writes_every_output(demo_run: tuple[Path, object]) -> None:
    out, proc = demo_run
    assert proc.returncode == 1, proc.stdout[-3000:]  # test_fails fails
    for name in ("metrics.csv", "report.html", "summary.md", "experiments/default.json", "attnlab.prom"):
        assert (out / name).is_file(), name
    assert "attnlab: wrote out/summary.md" in proc.stdout


def test_html_summary_table_and_plots(demo_run: tuple[Path, object]) -> None:
    out, _ = demo_run
    page = (out / "report.html").read_text()
    summary = page[page.index('id="attnlab-summary"') :]
    main, perf = re.findall(r"<thead>(.*?)</thead>", summary)[:2]
    assert re.findall(r"<th>(.*?)</th>", main) == [
        "model", "quant", "attention", "cosine", "perplexity", "peak memory", "result"
    ]  # fmt: skip
    assert re.findall(r"<th>(.*?)</th>", perf) == [
        "model", "quant", "attention", "path", "batch", "prompt", "new tokens", "TTFT", "TPOT", "decode tok/s",
        "MBU", "rounds", "result",
    ]  # fmt: skip
    assert "fail (0/1)" in summary and "pass (2/2)" in summary  # none/sdpa: quality[none] + perf[sdpa]
    assert "128.0 MiB" in summary  # peak memory 2**27 bytes
    assert summary.index('id="attnlab-failures"') < summary.index("<table")  # failures first
    assert "test_demo.py::test_fails</code>: failed: AssertionError: cosine below the gate" in summary
    # run plots (quality vs quantizer, TPOT vs prompt length, tok/s vs batch) + per-test plots are PNGs
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]{100,})", page.replace("\\/", "/"))
    assert len(pngs) >= 3 + 1 + 2 * 3  # run plots; layer curve; per perf test: TPOT, tok/s, monitor
    for title in ("quality by variant", "TPOT vs prompt length", "tokens/s vs batch size"):
        assert f'alt="{title}"' in summary
    # per-test PNG extras, by name, in pytest-html's (HTML-escaped) JSON test data
    names = re.findall(r"&#34;name&#34;: &#34;([^&]*)&#34;", page)
    assert sorted(names) == sorted(
        ["per-layer cosine", "TPOT vs prompt length", "TPOT vs prompt length", "tokens/s vs batch size",
         "tokens/s vs batch size", "monitor: test_demo.py__test_perf_sdpa_.json",
         "monitor: test_demo.py__test_perf_sliding_window_256_.json"]
    )  # fmt: skip


def test_summary_md_and_json(demo_run: tuple[Path, object]) -> None:
    out, _ = demo_run
    md = (out / "summary.md").read_text()
    for section in ("## Results", "## Conclusions", "## Environment", "## Reproduce"):
        assert section in md
    assert "| torch |" in md and "| transformers |" in md
    assert "python -m pytest -p no:cacheprovider -q test_demo.py" in md
    assert "TPOT: best none/sliding_window_256" in md  # 1e-5/token beats 2e-5/token at every length
    assert "Failed: `test_demo.py::test_fails`" in md
    # the failures open the summary, each with its first error line; gated figures show their gate
    assert md.index("## Failed and errored tests (1)") < md.index("## Results")
    assert "- `test_demo.py::test_fails`: failed: AssertionError: cosine below the gate" in md
    assert "0.96 (gate 0.95)" in md and "(recorded)" in md
    doc = json.loads((out / "experiments" / "default.json").read_text())
    assert doc["environment"]["packages"]["pytest"] == pytest.__version__
    assert doc["outcomes"] == {"passed": 5, "failed": 1}
    by = {(s["quant"], s["attention"]): s for s in doc["summary"]}
    assert by[("rtn-int4", "sdpa")]["cosine"] == pytest.approx(0.96)
    assert "TPOT" not in by[("none", "sdpa")]  # latency lives in the per-cell perf list, never averaged over cells
    perf = {(p["attention"], p["path"], p["prompt_len"]): p for p in doc["perf"] if p["TPOT"]}
    assert perf[("sdpa", "hf", "32")]["TPOT"]["value"] == pytest.approx(0.01 + 2e-5 * 32)
    assert by[("broken", "sdpa")]["result"] == "fail"
    for png in ("quality_by_variant", "TPOT_vs_prompt_length", "tokens_s_vs_batch_size"):
        assert (out / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prometheus_textfile(demo_run: tuple[Path, object]) -> None:
    out, _ = demo_run
    text = (out / "attnlab.prom").read_text()
    assert text.startswith("# HELP attnlab_metric")
    assert "# TYPE attnlab_metric gauge" in text
    line = next(ln for ln in text.splitlines() if 'metric="perplexity"' in ln and 'quant="rtn-int4"' in ln)
    assert line.endswith(" 11.5")
    samples = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert all(re.match(r'^attnlab_metric\{(\w+="[^"]*",?)+\} \S+$', ln) for ln in samples)


def test_report_renders_in_headless_chromium(demo_run: tuple[Path, object], tmp_path: Path) -> None:
    from pytest_attnlab.reports import browser

    if browser.find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    out, _ = demo_run
    page = browser.render(out / "report.html", tmp_path / "report.png")
    assert page.summary_tables == 1
    # after pytest-html's JavaScript ran: the 3 run plots, and per test with plots the first image
    # of its media carousel (test_layers, test_perf[sdpa], test_perf[sliding_window_256])
    assert page.images == 3 + 3
    assert page.screenshot is not None and page.screenshot.read_bytes()[:4] == b"\x89PNG"


LIVE = """
import urllib.request

def test_scrape(metrics, pytestconfig):
    metrics.record("tpot", 0.0123, "s")
    from pytest_attnlab.reports.plugin import STATE_KEY
    port = pytestconfig.stash[STATE_KEY].exporter.port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'attnlab_metric{attention="sdpa",metric="tpot"' in body or 'metric="tpot"' in body
    assert "0.0123" in body
    assert "attnlab_process_rss_bytes" in body
    assert pytestconfig.stash[STATE_KEY].exporter.server.server_address[0] == "127.0.0.1"  # loopback only
"""


def test_prometheus_live_port_serves_gauges(pytester: pytest.Pytester) -> None:
    pytest.importorskip("prometheus_client", reason="pip install 'pytest-attnlab[prometheus]'")
    pytester.makepyfile(LIVE)
    result = pytester.runpytest("--attnlab-report-dir", "out", "--attnlab-prometheus-port", "0", "-p", "no:html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["attnlab: served Prometheus gauges on 127.0.0.1:*"])


def test_prometheus_port_rejects_bad_value(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attnlab-prometheus-port", "http")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-prometheus-port: expected a port number 0-65535*"])


def test_works_with_nested_conftests(pytester: pytest.Pytester) -> None:
    """Sibling conftest.py files make pytest build per-path hook subsets: our plugins must be hashable."""
    test = "def test_x(metrics):\n    metrics.record('tpot', 0.01, 's')\n"
    for sub in ("a", "b"):
        pytester.mkpydir(sub)
        (pytester.path / sub / "conftest.py").write_text("import pytest\n")
        (pytester.path / sub / f"test_{sub}.py").write_text(test)
    result = pytester.runpytest("--attnlab-report-dir", "out", "-p", "no:html")
    result.assert_outcomes(passed=2)
    assert "INTERNALERROR" not in result.stdout.str()
