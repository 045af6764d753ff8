"""Cells whose decode-path variant changed between BASE and CURRENT (e.g. `auto`'s pick moved to the compiled
cuBLAS step): their rows differ only in the variant's context keys, so neither run has the other's key. Such a
pair is matched here, so the gate can say "variant changed" instead of "missing" and "new"."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pytest_attnlab.compare.loaders import Key

#: metrics.csv context keys that name the fast path's variant: the keys of paths.base.PathOptions.context(),
#: written out so that compare imports no path code (tests/test_compare_variant.py keeps the two equal)
VARIANT_KEYS = ("compile", "compile_scope", "fast_attention", "fast_weights", "fast_quant", "fast_gemv")
#: context keys written from the variant keys, so they change with them: pytest-benchmark's group, which
#: test_fast_variant names `{label}-fast-{PathOptions.variant}-` (and records as context)
DERIVED_KEYS = ("group",)
#: a variant key one side did not record
UNSET = "unset"

#: (variant key, BASE's value, CURRENT's value) for each variant key whose value differs
Change = tuple[tuple[str, str, str], ...]


def _fields(key: Key) -> dict[str, object]:
    fields = json.loads(key[2]) if key[2] else {}
    return fields if isinstance(fields, dict) else {}


def _cell(key: Key) -> Key:
    """The key without its variant keys (and those derived from them): what must agree for two keys to be one
    cell run as two variants."""
    rest = {k: v for k, v in _fields(key).items() if k not in VARIANT_KEYS + DERIVED_KEYS}
    return key[0], key[1], json.dumps(rest, sort_keys=True, default=str)


def _by_cell(keys: Iterable[Key]) -> dict[Key, list[Key]]:
    cells: dict[Key, list[Key]] = {}
    for key in keys:
        cells.setdefault(_cell(key), []).append(key)
    return cells


def pairs(base_only: Iterable[Key], current_only: Iterable[Key]) -> dict[Key, Key]:
    """BASE key -> CURRENT key, for keys found in one run only that agree in all but variant keys, and differ in
    one of them. A cell with two or more such keys on either side is ambiguous (which variant became which?): it
    stays unpaired."""
    base, current = _by_cell(base_only), _by_cell(current_only)
    one_each = [(base[c][0], current[c][0]) for c in base if len(base[c]) == 1 and len(current.get(c, ())) == 1]
    return {b: c for b, c in one_each if changed(b, c)}


def changed(base_key: Key, current_key: Key) -> Change:
    """What the variant changed from, to, in VARIANT_KEYS order."""
    base, current = _fields(base_key), _fields(current_key)
    return tuple(
        (k, str(base.get(k, UNSET)), str(current.get(k, UNSET))) for k in VARIANT_KEYS if base.get(k) != current.get(k)
    )


def describe(change: Change) -> str:
    """'compile none→default, fast_gemv triton-fused→torch'."""
    return ", ".join(f"{k} {old}→{new}" for k, old, new in change)
