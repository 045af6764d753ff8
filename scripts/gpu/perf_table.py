"""Print the perf table (path x prompt length x batch) from a metrics.csv written by suites/perf.

usage: python scripts/gpu/perf_table.py REPORT_DIR/metrics.csv [--markdown OUT.md]
Built from metrics.csv (fsynced per row), so a run cut short still gives the rows it finished.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict

COLUMNS = [
    ("path", None, "{}"),
    ("prompt", None, "{}"),
    ("batch", None, "{}"),
    ("new", None, "{}"),
    ("TTFT ms", "ttft", "{:.1f}"),
    ("TPOT ms", "tpot", "{:.2f}"),
    ("ITL p99 ms", "itl_p99", "{:.2f}"),
    ("prefill tok/s", "prefill_tok_s", "{:.0f}"),
    ("decode tok/s", "decode_tok_s", "{:.0f}"),
    ("e2e tok/s", "e2e_tok_s", "{:.0f}"),
    ("MBU %", "mbu", "{:.1f}"),
    ("MFU %", "mfu", "{:.1f}"),
    ("peak mem GiB", "peak_mem", "{:.2f}"),
]
SCALE = {"ttft": 1e3, "tpot": 1e3, "itl_p99": 1e3, "peak_mem": 1 / 2**30}
SINGLE = (
    "timing_error",
    "timer_overhead",
    "monitor_overhead",
    "tpot_monitor_off",
    "tpot_monitor_on",
    "e2e_latency_fixture",
    "e2e_latency_raw_events",
    "greedy_tokens_agree",
    "peak_bandwidth",
    "peak_flops",
)


def load(path: str) -> tuple[dict, list[dict]]:
    cells: dict[tuple, dict] = defaultdict(dict)
    singles = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            extra = json.loads(row["extra"]) if row["extra"] else {}
            if row["metric"] in SINGLE:
                singles.append(row)
            if "test_generation" not in row["nodeid"] or "prompt_len" not in extra:
                continue
            key = (
                extra.get("compile", ""),
                row["backend"],
                int(extra["prompt_len"]),
                int(extra["batch"]),
                int(extra["new_tokens"]),
                row["nodeid"].split("::")[0],
            )
            try:
                cells[key][row["metric"]] = float(row["value"])
            except ValueError:
                pass
    return cells, singles


def table(cells: dict) -> list[str]:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for key in sorted(cells, key=lambda k: (k[1], k[2], k[3], k[4])):
        _, path, prompt, batch, new, _ = key
        vals = [path, prompt, batch, new]
        for _, metric, fmt in COLUMNS[4:]:
            v = cells[key].get(metric)
            vals.append("-" if v is None else fmt.format(v * SCALE.get(metric, 1)))
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    out = []
    for path in args.csv:
        if not os.path.isfile(path):
            out += [f"### {path}: missing (that step did not run or was cut short)", ""]
            continue
        cells, singles = load(path)
        out += [f"### {path}", *table(cells), ""]
        for row in singles:
            out.append(
                f"- {row['nodeid'].split('::')[-1]} {row['metric']} = {row['value']} {row['unit']} "
                f"(backend {row['backend']}) {row['extra'][:160]}"
            )
        out.append("")
    print("\n".join(out))
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
