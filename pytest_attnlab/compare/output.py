"""The comparison for people: a table that fits a terminal, one line per kind of metric left out, and Markdown
for a pull request's job summary with the regressions first."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import TextIO

from pytest_attnlab.compare.lines import VARIANT_CHANGED, Line, Verdict
from pytest_attnlab.compare.noise_model import pool_key
from pytest_attnlab.compare.variant import describe

#: context fields every row has; the table shows extra fields only where rows of one test differ in them
_CONTEXT = ("model", "quant", "attention", "backend")
#: the table's width (a terminal's), the narrowest its test column gets, and an extra field's widest value
WIDTH, TEST_MIN, EXTRA_WIDTH = 120, 24, 16
#: statuses in the order the Markdown lists them: what fails first, then what the gate could not see
_ORDER = ("REGRESSED", "not finite", "missing", "UNGATED", VARIANT_CHANGED, "not significant", "ok", "new", "-")
HEADER = ("test", "metric", "base", "current", "change", "95% interval", "floor", "thr", "status")


def _cut(text: str, width: int) -> str:
    """Text cut to width in its middle, where a test id's parameters are least telling (the path, hf/fast,
    sits at the end)."""
    if len(text) <= width:
        return text
    head = max(1, (width - 1) // 3)
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def short_ids(lines: Iterable[Line]) -> dict[int, str]:
    """id(line) -> the test name and its parameters (no file path), plus the extra context fields that tell
    lines of one test and metric apart (layer=2), each cut to EXTRA_WIDTH."""
    lines = list(lines)
    extras = {id(ln): {k: v for k, v in (json.loads(ln.key[2]) if ln.key[2] else {}).items() if k not in _CONTEXT}
              for ln in lines}  # fmt: skip
    groups: dict[tuple[str, str], list[Line]] = {}
    for ln in lines:
        groups.setdefault((ln.key[0], ln.key[1]), []).append(ln)
    out = {}
    functions = {ln.key[0].rsplit("::", 1)[-1].split("[")[0] for ln in lines}
    for (test, _metric), group in groups.items():
        varying = {
            k for ln in group for k in extras[id(ln)] if len({json.dumps(extras[id(o)].get(k)) for o in group}) > 1
        }
        name = test.rsplit("::", 1)[-1]
        if len(functions) == 1 and "[" in name:  # one test function: its name goes above the table
            name = name[name.index("[") :]
        for ln in group:
            shown = ",".join(f"{k}={_cut(str(extras[id(ln)].get(k)), EXTRA_WIDTH)}" for k in sorted(varying))
            out[id(ln)] = name + (f" [{shown}]" if shown else "")
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.0f}" if 1000 <= abs(v) < 1e7 else f"{v:.4g}"


def _row(ln: Line, name: str) -> tuple[str, ...]:
    both = ln.base is not None and ln.current is not None
    base, cur = ln.values if both else (ln.base and ln.base.value, ln.current and ln.current.value)
    floor, t = ln.floor, ln.threshold
    floor_pct = "" if floor is None else f"{floor * 100:.1f}%"
    amount = str(t).split(":", 1)[1] if t and not ln.variant_change else ""  # a changed variant is not gated
    return (name, ln.key[1], _fmt(base), _fmt(cur), ln.change(), ln.interval(), floor_pct, amount, ln.status)


def shown(lines: list[Line], show_all: bool) -> list[Line]:
    """Gated metrics (and, with --all, every metric); ungated ones missing on one side go in one summary line."""
    return [ln for ln in lines if show_all or ln.threshold is not None]


def print_table(lines: list[Line], out: TextIO, show_all: bool) -> None:
    rows_lines = shown(lines, show_all)
    names = short_ids(rows_lines)
    functions = {ln.key[0].split("[")[0] for ln in rows_lines}
    if len(functions) == 1 and any("[" in ln.key[0] for ln in rows_lines):
        out.write(f"{functions.pop()}[...]\n")
    rows = [HEADER, *(_row(ln, names[id(ln)]) for ln in rows_lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    room = WIDTH - sum(widths[1:]) - 2 * (len(HEADER) - 1)  # what the test column may take
    if widths[0] > room:
        widths[0] = max(TEST_MIN, room)
        rows = [(_cut(r[0], widths[0]), *r[1:]) for r in rows]
    for i, r in enumerate(rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if i == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _families(lines: list[Line]) -> str:
    """'nvml_*: 40, peak_mem: 2': metric names grouped by their first word."""
    counts = Counter(ln.key[1].split("_")[0] + ("_*" if "_" in ln.key[1] else "") for ln in lines)
    return ", ".join(f"{name}: {n}" for name, n in counts.most_common())


def _blind_lines(blind: list[Line], names: dict[int, str]) -> list[str]:
    """'  [none-sdpa-p128-b*-n64-hf] tpot: detects ≥ 182%': cells that pooled their noise (same floor) share a
    line, their sizes shown as '*'."""
    groups: dict[tuple[str, str, str], list[Line]] = {}
    for ln in blind:
        groups.setdefault((pool_key(ln.key)[0], ln.key[1], ln.detects()), []).append(ln)
    return [f"  {_merged([names[id(ln)] for ln in group])} {metric}: detects {detects}"
            for (_, metric, detects), group in groups.items()]  # fmt: skip


def _merged(ids: list[str]) -> str:
    """'[none-p128-b1-hf]' and '[none-p128-b8-hf]' as '[none-p128-b*-hf]': the parameters that differ as '*'."""
    split = [re.split(r"([\[\]-])", i) for i in ids]
    if len({len(s) for s in split}) != 1:
        return ids[0] + (f" (+{len(ids) - 1} pooled)" if len(ids) > 1 else "")
    return "".join(
        parts[0] if len(set(parts)) == 1 else re.sub(r"\d+", "*", parts[0]) for parts in zip(*split, strict=True)
    )


def _moved_lines(moved: list[Line], names: dict[int, str]) -> list[str]:
    """'  [m-p128-b2-n64] tpot, ttft: compile none→default, fast_gemv triton-fused→torch': one line per cell and
    change, its metrics listed."""
    groups: dict[tuple[str, str], list[str]] = {}
    for ln in moved:
        groups.setdefault((names[id(ln)], describe(ln.variant_change)), []).append(ln.key[1])
    return [f"  {name} {', '.join(metrics)}: {change}" for (name, change), metrics in groups.items()]


def notes(lines: list[Line]) -> list[str]:
    """One line per kind of metric the table leaves out or cannot judge: blind cells with what each detects,
    cells whose variant changed with what changed, ungated metrics missing from one side."""
    names = short_ids(lines)
    out = []
    blind = [ln for ln in lines if ln.status == "UNGATED"]
    if blind:
        out.append(f"UNGATED ({len(blind)}: noise floor above threshold; a change beyond the floor still fails):")
        out += _blind_lines(blind, names)
    moved = [ln for ln in lines if ln.threshold is not None and ln.status == VARIANT_CHANGED]
    if moved:
        out.append(f"{VARIANT_CHANGED} ({len(moved)}: not compared, another variant measures another thing; "
                   "--strict fails on them):")  # fmt: skip
        out += _moved_lines(moved, names)
    gone = [ln for ln in lines if ln.threshold is None and ln.status == "missing"]
    if gone:
        out.append(f"not gated, absent from CURRENT: {len(gone)} metrics ({_families(gone)})")
    new = [ln for ln in lines if ln.threshold is None and ln.status == "new"]
    if new:
        out.append(f"not gated, new in CURRENT: {len(new)} metrics ({_families(new)})")
    moved_ungated = [ln for ln in lines if ln.threshold is None and ln.status == VARIANT_CHANGED]
    if moved_ungated:
        out.append(f"not gated, {VARIANT_CHANGED}: {len(moved_ungated)} metrics ({_families(moved_ungated)})")
    return out


def markdown(lines: list[Line], verdict: Verdict, title: str = "Performance gate") -> str:
    """The comparison as Markdown: the verdict, then the gated rows, regressions first, then the notes."""
    rows_lines = sorted(shown(lines, False), key=lambda ln: _ORDER.index(ln.status) if ln.status in _ORDER else 99)
    names = short_ids(rows_lines)
    icon = "✅" if verdict.code == 0 else "❌"
    md = [f"### {icon} {title}", "", f"**{verdict.line()}**", ""]
    if rows_lines:
        md += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for ln in rows_lines:
            cells = [c.replace("|", "\\|") for c in _row(ln, names[id(ln)])]
            cells[-1] = f"**{cells[-1]}**" if ln.status in ("REGRESSED", "not finite", "missing") else cells[-1]
            md.append("| " + " | ".join(cells) + " |")
    md += ["", *(f"- {n.strip()}" if n.startswith("  ") else n for n in notes(lines))]
    return "\n".join(md).rstrip() + "\n"
