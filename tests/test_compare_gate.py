"""The compare gate never passes where it cannot see: a NaN, an empty run, a missing baseline, runs from two
machines, and a slowdown far past a blind metric's floor each fail with their reason; A/B mode gates several
runs of two commits; the output fits a terminal and renders as Markdown. Each planted bug is one a gate let
through before (issue 27)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pytest_attnlab.compare import main
from pytest_attnlab.compare import noise as noise_file

H200_RUNS = Path(__file__).parent / "data" / "h200_noise_gate"
#: gpu.yml's thresholds
GATES = ["-t", "tpot:+5%", "-t", "ttft:+10%", "-t", "tok_s:-5%", "-t", "cosine:-0.01"]


def gate(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([*argv, *GATES], out=out), out.getvalue()


def copy_run(name: str, dest: Path, *, backend: str | None = None, slower: float = 1.0, **edit: str) -> Path:
    """A recorded H200 run copied to dest/metrics.csv; rows of `backend` made `slower` times slower (times up,
    rates down, rounds too); `edit` sets a metric's value (tpot="nan")."""
    dest.mkdir(parents=True, exist_ok=True)
    with open(H200_RUNS / name / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if backend and row["backend"] == backend:
            f = 1 / slower if row["metric"].endswith("tok_s") else slower
            row["value"] = str(float(row["value"]) * f)
            row["samples"] = " ".join(str(float(x) * f) for x in row["samples"].split())
        if row["metric"] in edit:
            row["value"] = edit[row["metric"]]
    with open(dest / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def noise_from(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "noise.json"
    assert noise_file.main([str(H200_RUNS / n) for n in names] + ["-o", str(path)], out=io.StringIO()) == 0
    return path


def status(out: str, cell: str, metric: str) -> str:
    line = next(ln for ln in out.splitlines() if cell in ln and f" {metric} " in ln)
    return line.split()[-1]


FLOOR_RUNS = ("identical-3", "identical-4", "identical-5", "identical-6")


def test_a_nan_in_a_gated_metric_fails(tmp_path: Path) -> None:
    """Planted: tpot NaN in one cell. It was counted as neither checked nor regressed: PASS."""
    floors = str(noise_from(tmp_path, *FLOOR_RUNS))
    base = str(H200_RUNS / "identical-1")
    assert gate(base, str(copy_run("identical-2", tmp_path / "same")), "--noise", floors)[0] == 0
    rc, out = gate(base, str(copy_run("identical-2", tmp_path / "cur", tpot="nan")), "--noise", floors)
    assert rc == 5, out
    assert "not finite" in out and out.splitlines()[-1].startswith("FAIL (a gated metric is NaN or inf)")
    assert gate(base, str(copy_run("identical-2", tmp_path / "inf", ttft="inf")), "--noise", floors)[0] == 5


def test_a_2_5x_slower_hf_path_fails_though_hf_is_blind(tmp_path: Path) -> None:
    """Planted: the HF path 2.5x slower. HF's floors (host-bound timings wander ~20 % between processes) are
    far above 5 %, so HF is UNGATED; a change beyond the floor still fails. The fast path is not touched."""
    floors = noise_from(tmp_path, *FLOOR_RUNS)
    base = H200_RUNS / "identical-1"
    rc, out = gate(str(base), str(H200_RUNS / "identical-2"), "--noise", str(floors))
    assert rc == 0 and "UNGATED" in out and "  [none-sdpa-p128-b*-n64-hf] tpot: detects ≥" in out, out  # b1, b8 pooled
    assert "UNGATED (noise floor above threshold)" in out.splitlines()[-1]
    slow = copy_run("identical-2", tmp_path / "slow", backend="hf", slower=2.5)
    rc, out = gate(str(base), str(slow), "--noise", str(floors))
    assert rc == 1, out
    assert status(out, "b1-n64-hf]", "tpot") == "REGRESSED" and status(out, "b1-n64-fast]", "tpot") == "ok"


def test_strict_fails_on_ungated_metrics(tmp_path: Path) -> None:
    floors = noise_from(tmp_path, *FLOOR_RUNS)
    rc, out = gate(str(H200_RUNS / "identical-1"), str(H200_RUNS / "identical-2"), "--noise", str(floors), "--strict")
    assert rc == 6 and out.splitlines()[-1].startswith("FAIL (--strict: metrics whose noise floor exceeds"), out


def bench_json(folder: Path, **machine: str) -> None:
    info = {"torch": "2.11.0+cu128", "cuda": "12.8", "driver": "570.124.06", "gpu": "NVIDIA H200", **machine}
    (folder / "benchmark.json").write_text(json.dumps({"machine_info": {"attnlab": info}, "benchmarks": []}))


def test_runs_from_different_machines_are_refused(tmp_path: Path) -> None:
    """Planted: CURRENT made on an H100, BASE on an H200. It was compared as if alike."""
    base = copy_run("identical-1", tmp_path / "base")
    cur = copy_run("identical-2", tmp_path / "cur")
    bench_json(base)
    bench_json(cur)
    rc, out = gate(str(base), str(cur))
    assert rc != 7 and "same gpu, driver, cuda, torch" in out, out
    bench_json(cur, gpu="NVIDIA H100 80GB HBM3", driver="550.54.15")
    rc, out = gate(str(base), str(cur))
    assert rc == 7, out
    assert "gpu: NVIDIA H200 (BASE) vs NVIDIA H100 80GB HBM3 (CURRENT)" in out and "driver: 570.124.06" in out
    rc, out = gate(str(base / "metrics.csv"), str(cur / "metrics.csv"), "--allow-mismatch")
    assert rc != 7 and "different machines allowed (--allow-mismatch): gpu:" in out, out


def test_machine_from_the_report_environment(tmp_path: Path) -> None:
    base, cur = copy_run("identical-1", tmp_path / "base"), copy_run("identical-2", tmp_path / "cur")
    for folder, torch in ((base, "2.11.0"), (cur, "2.13.0")):
        (folder / "experiments").mkdir()
        env = {"gpus": [{"name": "NVIDIA H200", "driver": "570"}], "torch": {"cuda": "12.8"},
               "packages": {"torch": torch}}  # fmt: skip
        (folder / "experiments" / "default.json").write_text(json.dumps({"environment": env}))
    rc, out = gate(str(base), str(cur))
    assert rc == 7 and "torch: 2.11.0 (BASE) vs 2.13.0 (CURRENT)" in out, out


def test_an_empty_run_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "metrics.csv"
    empty.parent.mkdir()
    empty.write_text((H200_RUNS / "identical-1" / "metrics.csv").read_text().splitlines()[0] + "\n")
    rc, out = gate(str(H200_RUNS / "identical-1"), str(empty))
    assert rc == 3 and "CURRENT is empty" in out.splitlines()[-1], out
    rc, out = gate(str(empty), str(H200_RUNS / "identical-1"))
    assert rc == 3 and "BASE is empty" in out.splitlines()[-1], out


def test_a_missing_baseline_fails_unless_bootstrapping(tmp_path: Path) -> None:
    """A missing baseline artifact used to skip the compare stage, green."""
    rc, out = gate(str(tmp_path / "no-baseline"), str(H200_RUNS / "identical-1"))
    assert rc == 8 and out.startswith("FAIL (missing baseline): no run at"), out
    rc, out = gate(str(tmp_path / "no-baseline"), str(H200_RUNS / "identical-1"), "--bootstrap")
    assert rc == 0 and out.startswith("BOOTSTRAP: no baseline at") and "as the baseline" in out


def test_ab_mode_gates_runs_of_two_commits() -> None:
    """--ab: three runs of each commit, the floors from their own spread (sqrt(1/3 + 1/3) of a run's sd, not
    sqrt(2)): identical halves pass, and a head with the planted 10 % decode slowdown fails on the fast path."""
    runs = [str(H200_RUNS / f"identical-{i}") for i in range(1, 7)]
    planted = [str(H200_RUNS / f"planted-{i}") for i in range(1, 4)]
    rc, out = gate("--ab", *runs[:3], "--vs", *runs[3:])
    assert rc == 0, out
    assert "A/B: 3 BASE runs vs 3 HEAD runs" in out
    rc, out = gate("--ab", *runs[:3], "--vs", *planted)
    assert rc == 1, out
    for batch in (1, 8):
        assert status(out, f"b{batch}-n64-fast]", "tpot") == "REGRESSED"
        assert status(out, f"b{batch}-n64-hf]", "tpot") in ("UNGATED", "REGRESSED")


@pytest.mark.parametrize(
    "argv",
    [["a"], ["a", "b", "c"], ["--ab", "a", "b"], ["a", "--ab", "x", "y", "--vs", "z", "w"], ["--ab", "x", "--vs", "y"]],
)
def test_ab_mode_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--ab" in capsys.readouterr().err


def test_output_fits_a_terminal_and_summarises_what_it_leaves_out(tmp_path: Path) -> None:
    """A 150-character tokenizer note in every row and 46 NVML metrics present only in BASE: lines ran past
    400 characters and 46 'missing' lines were printed."""
    base = copy_run("identical-1", tmp_path / "base")
    cur = copy_run("planted-1", tmp_path / "cur")
    note = "tokenizer borrowed from Qwen/Qwen2.5-0.5B-Instruct: the checkpoint has none " * 2
    for path in (base, cur):
        text = (
            (path / "metrics.csv")
            .read_text()
            .replace('""prompt_len"": 128}', f'""prompt_len"": 128, ""note"": ""{note}""}}')
        )
        (path / "metrics.csv").write_text(text)
    with open(base / "metrics.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        test = "suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b1-n64-hf]"
        for i in range(46):
            w.writerow(
                ["1", "r", test, f"nvml_sm_clock_{i}", "1.0", "", "", "m", "none", "sdpa", "hf", "cuda:0", "", "{}", ""]
            )
    rc, out = gate(str(base), str(cur))
    assert rc == 1
    assert max(map(len, out.splitlines()[:-1])) <= 120, max(out.splitlines(), key=len)
    assert "tokenizer" not in out  # the same in both runs: not shown
    assert "missing" not in out.replace("gate metrics missing", "")
    assert "not gated, absent from CURRENT: 46 metrics (nvml_*: 46)" in out


def test_markdown_lists_regressions_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md = tmp_path / "compare.md"
    rc, _ = gate(str(H200_RUNS / "identical-1"), str(H200_RUNS / "planted-1"), "--markdown", str(md))
    assert rc == 1
    text = md.read_text()
    assert text.startswith(f"### ❌ Performance gate: {H200_RUNS / 'planted-1'} vs ") and "**FAIL (regression)" in text
    statuses = [ln.rsplit("|", 2)[1].strip(" *") for ln in text.splitlines() if ln.startswith("| [")]
    assert statuses and statuses[0] == "REGRESSED"
    assert statuses == sorted(statuses, key=lambda s: s != "REGRESSED")
    assert summary.read_text() == "earlier step\n" + text
