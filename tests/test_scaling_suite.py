"""suites/scaling on CPU with a tiny random model: the timings moved out of scripts/gpu record their rows, and
`python -m pytest_attnlab table` prints them as the scripts' tables did."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scaling_suite_rows_and_table(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites" / "scaling"), "-q", "-p", "no:cacheprovider",
           "-p", "no:html", "--attnlab-model", "random:tiny-qwen2", "--attnlab-quant", "none,rtn-int4-g128-packed",
           "--attnlab-perf-prompt-lens", "16", "--attnlab-perf-batch", "1", "--attnlab-perf-new-tokens", "2",
           "--attnlab-perf-rounds", "1", "--attnlab-report-dir", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "metrics.csv", newline="", encoding="utf-8")))
    got = {(r["quant"], r["attention"], r["metric"]) for r in rows}
    for variant in ("sdpa", "sliding_window_1024_sink4", "block_sparse_b128_k8", "linear_elu"):
        assert {("none", variant, m) for m in ("prefill_s", "decode_step_s", "state_bytes")} <= got
    # the conftest's packed quantizer ran, measured against the unquantized cell before it
    assert {("rtn-int4-g128-packed", "sdpa", m) for m in ("tpot", "weight_bytes_ratio", "tpot_speedup_vs_none")} <= got
    state = {r["attention"]: float(r["value"]) for r in rows if r["metric"] == "state_bytes"}
    assert state["linear_elu"] > 0 and state["sdpa"] == 0
    table = subprocess.run(
        [sys.executable, "-m", "pytest_attnlab", "table", str(out), "--by", "quant", "-m", "weight_bytes_ratio"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[:2] == ["| quant | weight_bytes_ratio |", "|---|---|"]
    assert any(line.startswith("| rtn-int4-g128-packed | 0.") for line in table.stdout.splitlines())
