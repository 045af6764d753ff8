"""A fast-path cell that ran as another variant (a new `auto` default) is neither missing nor gated: compare pairs
its BASE and CURRENT rows, which differ only in the variant keys, reads them "variant changed" and says in the
verdict how many it could not compare. Rows that differ in anything else, or pair ambiguously, stay missing."""

from __future__ import annotations

import json

from pytest_attnlab.compare.variant import VARIANT_KEYS, changed, describe, pairs
from pytest_attnlab.paths.base import PathOptions

FAST = "suites/perf/test_fast_path.py::test_fast_variant[m-p128-b{batch}-n64]"
#: `auto` on CUDA from batch 2, before and after the default changed (paths.base.AUTO_FAST, PathOptions.for_batch)
OLD = {"compile": "none", "compile_scope": "none", "fast_attention": "triton", "fast_weights": "fused",
       "fast_quant": "none", "fast_gemv": "triton-fused"}  # fmt: skip
NEW = {**OLD, "compile": "default", "compile_scope": "step", "fast_gemv": "torch"}
CHANGE = "compile none→default, compile_scope none→step, fast_gemv triton-fused→torch"


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
