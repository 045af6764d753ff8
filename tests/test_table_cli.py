"""`python -m pytest_attnlab table METRICS.csv`: the table that replaced scripts/gpu's own printers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_attnlab.__main__ import main
from pytest_attnlab.metrics.csv_file import CsvWriter
from pytest_attnlab.metrics.row import MetricRow

PERF = "suites/perf/test_generation_perf.py::test_generation[p128-b1]"
QUANT = "suites/correctness/test_quantization.py::test_quantized_logits_match_baseline[rtn-int8]"


def write_csv(path: Path, rows: list[MetricRow]) -> Path:
    writer = CsvWriter(path)
    for row in rows:
        writer.write(row)
    writer.close()
    return path


def perf_rows(scale: float = 1.0) -> list[MetricRow]:
    rows = []
    for path in ("hf", "fast"):
        for batch in (1, 8):
            ctx = {"model": "random:m", "backend": path, "batch": batch, "prompt_len": 128, "new_tokens": 32}
            rows.append(MetricRow(PERF, "tpot", 0.002 * batch * scale, "s", context=ctx))
            rows.append(MetricRow(PERF, "mbu", 40.0 + batch, "%", context=ctx))
    return rows


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = main(["table", *argv])
    return rc, capsys.readouterr().out.splitlines()


def test_groups_by_extra_keys_one_column_per_metric(tmp_path: Path, capsys) -> None:
    csv = write_csv(tmp_path / "metrics.csv", perf_rows())
    rc, out = run([str(csv), "--by", "backend,batch,prompt_len", "-m", "tpot,mbu"], capsys)
    assert rc == 0
    assert out[0] == "| backend | batch | prompt_len | tpot | mbu |"
    assert out[1] == "|---|---|---|---|---|"
    assert "| hf | 1 | 128 | 2 ms | 41 % |" in out
    assert "| fast | 8 | 128 | 16 ms | 48 % |" in out
    assert len(out) == 2 + 4


def test_cells_average_their_rows_and_keep_first_seen_order(tmp_path: Path, capsys) -> None:
    csv = write_csv(tmp_path / "metrics.csv", perf_rows())
    rc, out = run([str(csv), "--by", "backend", "-m", "tpot"], capsys)
    assert rc == 0
    assert out[2:] == ["| hf | 9 ms |", "| fast | 9 ms |"]  # mean of batch 1 (2 ms) and batch 8 (16 ms)


def test_runs_from_several_report_dirs_and_a_missing_one(tmp_path: Path, capsys) -> None:
    for name, scale in (("eager", 2.0), ("compiled", 1.0)):
        (tmp_path / name).mkdir()
        write_csv(tmp_path / name / "metrics.csv", perf_rows(scale))
    argv = [str(tmp_path / "eager"), str(tmp_path / "cut-short" / "metrics.csv"), str(tmp_path / "compiled")]
    rc = main(["table", *argv, "--by", "run,backend,batch", "-m", "tpot"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "cut-short" in captured.err and "missing" in captured.err
    assert "| eager | hf | 8 | 32 ms |" in captured.out.splitlines()
    assert "| compiled | hf | 8 | 16 ms |" in captured.out.splitlines()


def test_nodeid_filter_gates_and_test_column(tmp_path: Path, capsys) -> None:
    quant = MetricRow(QUANT, "logits_cosine", 0.999, "", threshold=0.99, context={"quant": "rtn-int8"})
    csv = write_csv(tmp_path / "metrics.csv", [*perf_rows(), quant])
    rc, out = run([str(csv), "-k", "test_quantized", "--by", "quant,test", "--gates"], capsys)
    assert rc == 0
    assert out == [
        "| quant | test | logits_cosine |",
        "|---|---|---|",
        "| rtn-int8 | test_quantized_logits_match_baseline[rtn-int8] | 0.999 (gate 0.99) |",
    ]


def test_tsv_format_and_every_metric_by_default(tmp_path: Path, capsys) -> None:
    csv = write_csv(tmp_path / "metrics.csv", perf_rows()[:2])
    rc, out = run([str(csv), "--format", "tsv", "--by", "model"], capsys)
    assert rc == 0
    assert out == ["model\ttpot\tmbu", "random:m\t2 ms\t41 %"]


def test_no_readable_file_is_an_error(tmp_path: Path, capsys) -> None:
    rc = main(["table", str(tmp_path / "none.csv")])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_help_from_the_module_entry_point() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pytest_attnlab", "table", "--help"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0
    assert "--by" in res.stdout and "--metric" in res.stdout and "prompt_len" in res.stdout
    top = subprocess.run(
        [sys.executable, "-m", "pytest_attnlab", "--help"], capture_output=True, text=True, check=False
    )
    assert "table" in top.stdout
