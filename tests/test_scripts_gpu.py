"""scripts/gpu/ holds thin wrappers: pytest runs of the suites and `python -m pytest_attnlab table` (issue 14)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_attnlab.metrics.csv_file import CsvWriter
from pytest_attnlab.metrics.row import MetricRow

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"
#: what a wrapper may not do itself: time, synchronise a device, or parse metrics.csv
OWN_LOGIC = re.compile(r"perf_counter|cuda\.synchronize|DictReader|csv\.reader|time\.time\(")


@pytest.mark.parametrize("script", sorted(GPU.glob("*.sh")), ids=lambda p: p.name)
def test_shell_wrappers_parse(script: Path) -> None:
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_no_timer_or_table_printer_left_in_scripts_gpu() -> None:
    offenders = [p.name for p in sorted(GPU.iterdir()) if p.is_file() and OWN_LOGIC.search(p.read_text())]
    assert not offenders, f"timing or CSV parsing belongs in the suites or the package: {offenders}"


def _variant_run(root: Path, name: str, compile_mode: str, tpot: float) -> None:
    variant = {"compile": compile_mode, "compile_scope": "step", "fast_attention": "sdpa", "fast_weights": "fused"}
    ctx = {
        "model": "random:m",
        "backend": "fast",
        **variant,
        "fast_quant": "none",
        "fast_gemv": "torch",
        "prompt_len": 512,
        "batch": 1,
    }
    node = "suites/perf/test_fast_path.py::test_fast_variant[p512-b1-n128]"
    rows = [MetricRow(node, "tpot", tpot, "s", context=ctx), MetricRow(node, "mbu", 61.5, "%", context=ctx)]
    if compile_mode != "none":
        rows.append(MetricRow(node, "compile_s", 42.0, "s", context={**ctx, "inductor_cache": "miss"}))
    if compile_mode != "none":  # a profiled run (--attnlab-perf-profile-steps), as profile_step.record writes it
        prof = {**ctx, "profile_steps": 20}
        rows.append(MetricRow(node, "profile_step_wall", 0.0028, "s", context=prof))
        rows.append(MetricRow(node, "profile_traced_wall", 0.0029, "s", context=prof))
        rows.append(MetricRow(node, "profile_busy", 0.89, "", context=prof))
        shares = {"gemv": 0.8, "attention": 0.05, "copy": 0.05, "elementwise": 0.08, "other": 0.02}
        rows += [MetricRow(node, f"profile_share_{k}", v, "", context=prof) for k, v in shares.items()]
        top = {**prof, "rank": 1, "kernel": "gemv2T_kernel_val<int>", "kernel_class": "gemv", "calls_per_step": 145.0}
        rows.append(MetricRow(node, "profile_top_kernel", 0.002, "s", context=top))
    check = "suites/perf/test_fast_path.py::test_fast_matches_hf_greedy_on_trained_model[b1]"
    rows.append(MetricRow(check, "greedy_tokens_agree", 32, "tokens", threshold=32, context=ctx))
    (root / name).mkdir(parents=True)
    writer = CsvWriter(root / name / "metrics.csv")
    for row in rows:
        writer.write(row)
    writer.close()


def test_fast_variants_table_part_prints_the_runs(tmp_path: Path) -> None:
    """`fast_variants.sh REPORTS table`: the tables fast_variants_table.py printed, from the table command."""
    _variant_run(tmp_path, "eager", "none", 0.004)
    _variant_run(tmp_path, "step-cold", "default", 0.002)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    res = subprocess.run(
        ["bash", str(GPU / "fast_variants.sh"), str(tmp_path), "table"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "| eager | none | step | sdpa | fused | none | torch | 512 | 1 | 4 ms | 61.5 % |  |  |" in lines
    assert "| step-cold | default | step | sdpa | fused | none | torch | 512 | 1 | 2 ms | 61.5 % |  | 42 s |" in lines
    assert "| step-cold | miss | 42 s |" in lines
    assert "| eager | test_fast_matches_hf_greedy_on_trained_model[b1] | 32 tokens (gate 32) |  |  |" in lines
    assert "| step-cold | 512 | 1 |  | 2.8 ms | 2.9 ms |  | 0.89 |  | 0.8 | 0.05 | 0.05 | 0.08 | 0.02 |" in lines
    assert "| step-cold | 1 | gemv | 145 | gemv2T_kernel_val<int> | 2 ms |" in lines


def test_noise_gate_wrappers_run_ci_gpu_and_the_package_tally() -> None:
    """noise_gate.sh is .ci/gpu's noise stage; noise_gate_tally.py is `python -m pytest_attnlab noise-tally`."""
    sh = (GPU / "noise_gate.sh").read_text()
    assert "ATTNLAB_GPU_STAGES=noise" in sh and "exec bash .ci/gpu" in sh
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run(
        [sys.executable, str(GPU / "noise_gate_tally.py"), "--help"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0 and "noise-tally" in res.stdout and "--ab N" in res.stdout
