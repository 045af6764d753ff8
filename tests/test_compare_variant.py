"""A fast-path cell that ran as another variant (a new `auto` default) is neither missing nor gated: compare pairs
its BASE and CURRENT rows, which differ only in the variant keys, reads them "variant changed" and says in the
verdict how many it could not compare. Rows that differ in anything else, or pair ambiguously, stay missing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pytest_attnlab.compare import main
from pytest_attnlab.compare.variant import VARIANT_KEYS, changed, describe, pairs
from pytest_attnlab.metrics.row import COLUMNS, MetricRow
from pytest_attnlab.paths.base import PathOptions

FAST = "suites/perf/test_fast_path.py::test_fast_variant[m-p128-b{batch}-n64]"
HF = "suites/perf/test_generation_perf.py::test_generation[none-sdpa-p128-b2-n64-hf]"
#: `auto` on CUDA from batch 2, before and after the default changed (paths.base.AUTO_FAST, PathOptions.for_batch)
OLD = {"compile": "none", "compile_scope": "none", "fast_attention": "triton", "fast_weights": "fused",
       "fast_quant": "none", "fast_gemv": "triton-fused"}  # fmt: skip
NEW = {**OLD, "compile": "default", "compile_scope": "step", "fast_gemv": "torch"}
CHANGE = "compile none→default, compile_scope none→step, fast_gemv triton-fused→torch"
GATES = ["-t", "tpot:+5%", "-t", "ttft:+10%", "-t", "tok_s:-5%"]


def fast_context(variant: dict[str, str], batch: int = 2) -> dict[str, object]:
    """A test_fast_variant row's context, as the suite records it: the variant, the cell's sizes and the
    benchmark group named after the variant."""
    group = f"m-fast-{'-'.join(variant.get(k, '') for k in VARIANT_KEYS)}-"
    return {"model": "m", "backend": "fast", "batch": batch, "prompt_len": 128, "new_tokens": 64, "group": group,
            **variant}  # fmt: skip


def key(metric: str = "tpot", batch: int = 2, **variant: str) -> tuple[str, str, str]:
    """A loaders.from_csv key of a test_fast_variant row: the context and extra fields as sorted JSON."""
    return FAST.format(batch=batch), metric, json.dumps(fast_context(variant, batch), sort_keys=True)


def test_variant_keys_are_the_fast_paths_context() -> None:
    """compare lists the variant keys itself (it imports no path code); they must stay PathOptions.context()'s."""
    for options in (PathOptions(), PathOptions(compile="default", compile_scope="layer", quant="int4-g32")):
        assert set(VARIANT_KEYS) == set(options.context())


def test_rows_that_differ_only_in_variant_keys_pair() -> None:
    """The benchmark group, named after the variant, changes with it and does not keep the rows apart."""
    old, new = key(**OLD), key(**NEW)
    assert pairs([old], [new]) == {old: new}
    assert describe(changed(old, new)) == CHANGE


def test_rows_that_differ_in_other_context_do_not_pair() -> None:
    assert pairs([key(**OLD)], [key(batch=4, **NEW)]) == {}
    assert pairs([key(**OLD)], [key("ttft", **NEW)]) == {}
    regrouped = json.dumps({**fast_context(OLD), "group": "elsewhere"}, sort_keys=True)
    other_group = (FAST.format(batch=2), "tpot", regrouped)
    assert pairs([key(**OLD)], [other_group]) == {}  # the same variant: nothing changed that explains the split


def test_an_ambiguous_cell_does_not_pair() -> None:
    """Two variants of one cell in BASE only, one in CURRENT only: which became which is not known."""
    max_autotune = {**NEW, "compile": "max-autotune-no-cudagraphs"}
    assert pairs([key(**OLD), key(**max_autotune)], [key(**NEW)]) == {}
    assert pairs([key(**OLD)], [key(**NEW), key(**max_autotune)]) == {}


def test_a_variant_key_one_run_lacks_reads_unset() -> None:
    """A BASE written before a variant key existed still pairs; the change names the key as unset there."""
    before = {k: v for k, v in OLD.items() if k != "fast_gemv"}
    assert changed(key(**before), key(**OLD)) == (("fast_gemv", "unset", "triton-fused"),)


Row = tuple[str, str, float, dict[str, object]]


def write_run(folder: Path, rows: list[Row]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for nodeid, metric, value, context in rows:
            w.writerow(MetricRow(nodeid, metric, value, context={"quant": "none", "attention": "sdpa", **context},
                                 run_id="r").as_csv())  # fmt: skip
    return str(folder)


def perf_run(variant: dict[str, str], *, slower: float = 1.0, hf_slower: float = 1.0, batch: int = 2) -> list[Row]:
    """An HF cell and a fast cell of `variant` at `batch` rows, their latencies `slower` times the baseline's."""
    hf = {"model": "m", "backend": "hf", "batch": 2, "prompt_len": 128, "new_tokens": 64}
    fast = fast_context(variant, batch)
    return [(HF, "tpot", 0.020 * hf_slower, hf), (HF, "ttft", 0.050 * hf_slower, hf),
            (FAST.format(batch=batch), "tpot", 0.010 * slower, fast),
            (FAST.format(batch=batch), "ttft", 0.030 * slower, fast)]  # fmt: skip


def gate(tmp_path: Path, base: list[Row], current: list[Row], *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = main([write_run(tmp_path / "base", base), write_run(tmp_path / "cur", current), *GATES, *argv], out=out)
    return rc, out.getvalue()


def fast_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("test_fast_variant")]


def test_a_new_default_variant_passes_and_is_named(tmp_path: Path) -> None:
    """Planted: `auto` from batch 2 now runs the compiled cuBLAS step, 30 % slower in this planted run. Every fast
    row of BASE read "missing" (exit 4) and CURRENT's "new"; now they pair, show both values and the change, are
    not gated, and the status line counts them."""
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW, slower=1.3), "--json", str(tmp_path / "c.json"))
    assert rc == 0, out
    tpot, ttft = (ln.split()[1:] for ln in fast_lines(out))  # no threshold shown: not gated
    assert tpot == ["tpot", "0.01", "0.013", "+30.0%", "variant", "changed"], out
    assert ttft == ["ttft", "0.03", "0.039", "+30.0%", "variant", "changed"], out
    assert f"  test_fast_variant[m-p128-b2-n64] tpot, ttft: {CHANGE}" in out
    assert out.splitlines()[-1].startswith("PASS: 0 regressed, 2 checked, 2 not compared (variant changed), 0 gate")
    doc = {(ln["test"], ln["metric"]): ln for ln in json.loads((tmp_path / "c.json").read_text())}
    moved = doc[(FAST.format(batch=2), "tpot")]
    assert moved["status"] == "variant changed" and moved["variant"]["fast_gemv"] == ["triton-fused", "torch"]
    assert moved["base"] == pytest.approx(0.010) and moved["current"] == pytest.approx(0.013) and moved["p"] is None


def test_strict_fails_on_a_changed_variant(tmp_path: Path) -> None:
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW), "--strict")
    assert rc == 6 and out.splitlines()[-1].startswith("FAIL (--strict: metrics not compared as their variant"), out


def test_a_regression_beside_a_changed_variant_still_fails(tmp_path: Path) -> None:
    """The fast cell's variant changed; the HF cell, run as before, is 20 % slower."""
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW, hf_slower=1.2))
    assert rc == 1, out
    assert out.splitlines()[-1].startswith("FAIL (regression): 2 regressed, 2 checked, 2 not compared (variant")


def test_a_cell_of_another_size_is_still_missing(tmp_path: Path) -> None:
    """Not a variant change: CURRENT ran the fast cell at batch 4, BASE at batch 2."""
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW, batch=4))
    assert rc == 4, out
    assert [ln.split()[-1] for ln in fast_lines(out)] == ["missing", "missing", "new", "new"], out
    assert "variant changed" not in out


def test_an_ambiguous_variant_change_is_still_missing(tmp_path: Path) -> None:
    """BASE ran the fast cell as two variants, CURRENT as a third: which one it replaced is not known."""
    max_autotune = {**NEW, "compile": "max-autotune-no-cudagraphs"}
    rc, out = gate(tmp_path, perf_run(OLD) + perf_run(max_autotune)[2:], perf_run(NEW))
    assert rc == 4 and "variant changed" not in out, out
    assert out.splitlines()[-1].endswith("4 gate metrics missing (ungated, not compared: 0 absent from CURRENT), "
                                         "thresholds tpot:+5% ttft:+10% tok_s:-5%")  # fmt: skip


def test_a_gate_that_saw_only_changed_variants_checked_nothing(tmp_path: Path) -> None:
    rc, out = gate(tmp_path, perf_run(OLD)[2:], perf_run(NEW)[2:])
    assert rc == 3, out
    assert out.splitlines()[-1].startswith("FAIL (nothing checked: no gated metric of BASE is in CURRENT (2 ran as")


def test_markdown_lists_changed_variants_after_what_fails(tmp_path: Path) -> None:
    md = tmp_path / "gate.md"
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW, hf_slower=1.2), "--markdown", str(md))
    statuses = [row.rsplit("|", 2)[-2].strip() for row in md.read_text().splitlines() if row.startswith("| test_")]
    assert rc == 1 and statuses == ["**REGRESSED**"] * 2 + ["variant changed"] * 2, md.read_text()
    assert f"- test_fast_variant[m-p128-b2-n64] tpot, ttft: {CHANGE}" in md.read_text()


def test_ab_mode_pairs_a_changed_variant(tmp_path: Path) -> None:
    """A pull request that changes the default, gated A/B: the base commit's runs against the head's."""
    folders = [write_run(tmp_path / f"{side}-{i}", perf_run(v)) for side, v in (("a", OLD), ("b", NEW)) for i in (1, 2)]
    out = io.StringIO()
    rc = main(["--ab", *folders[:2], "--vs", *folders[2:], *GATES], out=out)
    assert rc == 0 and "2 not compared (variant changed)" in out.getvalue().splitlines()[-1], out.getvalue()


def test_an_ungated_metric_of_a_changed_variant_is_not_missing(tmp_path: Path) -> None:
    """peak_mem (no threshold) of the fast cell: one summary line, and --fail-on-missing does not count it."""
    peak = [(FAST.format(batch=2), "peak_mem", 2e9, fast_context(v)) for v in (OLD, NEW)]
    rc, out = gate(tmp_path, perf_run(OLD) + peak[:1], perf_run(NEW) + peak[1:], "--fail-on-missing")
    assert rc == 0 and "not gated, variant changed: 1 metrics (peak_*: 1)" in out, out


def bench_run(path: Path, variant: dict[str, str], slower: float = 1.0) -> str:
    """The same fast cell as pytest-benchmark writes it: keyed by its test id, the variant in string extra_info."""
    mean = 0.7 * slower
    doc = {"machine_info": {}, "benchmarks": [
        {"fullname": FAST.format(batch=2), "name": "test_fast_variant[m-p128-b2-n64]",
         "stats": {"min": mean * 0.98, "median": mean, "mean": mean, "max": mean * 1.02, "stddev": 0.001,
                   "ops": 1 / mean},
         "extra_info": {"tpot": 0.010 * slower, "ttft": 0.030 * slower, "path": "fast", **variant}},
    ]}  # fmt: skip
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_slower_new_default_still_fails_the_benchmark_json_gate(tmp_path: Path) -> None:
    """What metrics.csv cannot compare (another variant), the benchmark JSON still gates: a cell's test id is its
    key there, so a new default 8 % slower for the user fails .ci/gpu's second compare."""
    rc, out = gate(tmp_path, perf_run(OLD), perf_run(NEW, slower=1.08))
    assert rc == 0 and "2 not compared (variant changed)" in out, out
    base, cur = bench_run(tmp_path / "b.json", OLD), bench_run(tmp_path / "c.json", NEW, slower=1.08)
    out = io.StringIO()
    assert main([base, cur, *GATES], out=out) == 1, out.getvalue()
    assert "REGRESSED" in out.getvalue() and "variant changed" not in out.getvalue()
    out = io.StringIO()
    assert main([base, bench_run(tmp_path / "same.json", NEW), *GATES], out=out) == 0, out.getvalue()
