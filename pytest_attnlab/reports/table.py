"""`python -m pytest_attnlab table METRICS.csv ...`: a metrics.csv as a table, one line per group of rows
(--by) and one column per metric (--metric), each cell the mean of its rows in a readable unit (ms, MiB).
Markdown by default, to paste into docs; several files (one per run or step) go in one table."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from pytest_attnlab.metrics.csv_file import load_rows
from pytest_attnlab.metrics.row import MetricRow as Row
from pytest_attnlab.reports import rows as metric_rows
from pytest_attnlab.reports.rows import BATCH_KEYS, NEW_TOKENS_KEYS, PROMPT_LEN_KEYS
from pytest_attnlab.reports.summary import md_table

#: --by names that are neither a column of metrics.csv nor a key of its `extra`: taken from the row or its file
DERIVED: dict[str, Callable[[Row, Path], str]] = {
    "run": lambda row, path: path.parent.name,  # the report dir: one per pytest run of a script
    "test": lambda row, path: row.nodeid.split("::")[-1],
    "file": lambda row, path: row.nodeid.split("::")[0],
}
ALIASES = {"prompt_len": PROMPT_LEN_KEYS, "batch": BATCH_KEYS, "new_tokens": NEW_TOKENS_KEYS}
COLUMNS = ("nodeid", "model", "quant", "attention", "backend", "device", "dtype")
FORMATS: dict[str, Callable[[list[str], list[list[str]]], str]] = {
    "markdown": md_table,
    "tsv": lambda header, body: "\n".join("\t".join(line) for line in [header, *body]),
}


def group_value(row: Row, path: Path, name: str) -> str:
    if name in DERIVED:
        return DERIVED[name](row, path)
    return getattr(row, name) if name in COLUMNS else metric_rows.extra_text(row, ALIASES.get(name, (name,)))


def grid(files: dict[Path, list[Row]], by: list[str], metrics: list[str], gates: bool) -> tuple[list, list]:
    """Header and body: the rows of `metrics` (all, when empty) grouped by `by`, in first-seen order."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for path, rows in files.items():
        for row in rows:
            if not metrics or row.metric in metrics:
                groups.setdefault(tuple(group_value(row, path, b) for b in by), []).append(row)
    names = metrics or list(dict.fromkeys(r.metric for rows in groups.values() for r in rows))
    body = []
    for key, rows in groups.items():
        cells = [metric_rows.cell([r for r in rows if r.metric == m], statistics.fmean) for m in names]
        body.append([*key, *(metric_rows.fmt_value(c if gates or c is None else c[:2]) for c in cells)])
    return [*by, *names], body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_attnlab table", description=__doc__)
    ap.add_argument("csv", nargs="+", type=Path, metavar="METRICS.csv", help="metrics.csv files (or report dirs)")
    comma = lambda s: [p for p in s.split(",") if p]  # noqa: E731
    ap.add_argument("-m", "--metric", type=comma, default=[], help="metrics to show, in order. Default: every one")
    ap.add_argument(
        "-b", "--by", type=comma, default=comma("model,quant,attention,backend"),
        help=f"group rows by these: {', '.join(COLUMNS)}, {', '.join(DERIVED)} or a key of `extra` (prompt_len, "
        "batch, new_tokens, compile...). Default: model,quant,attention,backend",
    )  # fmt: skip
    ap.add_argument("-k", "--nodeid", default="", help="only rows whose test id contains this text")
    ap.add_argument("--gates", action="store_true", help="show each cell's gate (threshold) beside its value")
    ap.add_argument("--format", choices=FORMATS, default="markdown", help="Default: %(default)s")
    args = ap.parse_args(argv)
    files = {p / "metrics.csv" if p.is_dir() else p: [] for p in args.csv}
    for path in files:
        if not path.is_file():  # a step that did not run or was cut short: the others still print
            print(f"table: {path}: missing", file=sys.stderr)
            continue
        files[path] = [r for r in load_rows([path]) if args.nodeid in r.nodeid]
    if not any(path.is_file() for path in files):
        return 2
    print(FORMATS[args.format](*grid(files, args.by, args.metric, args.gates)))
    return 0
