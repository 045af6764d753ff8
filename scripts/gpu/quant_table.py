"""Print the quantization suite's metrics.csv as one markdown row per (quant, attention).

Usage: python scripts/gpu/quant_table.py reports/metrics.csv
"""

from __future__ import annotations

import csv
import sys

COLUMNS = [
    ("logits_cosine", "logits cos", "{:.4f}"),
    ("min_layer_cosine", "min layer cos", "{:.4f}"),
    ("first_divergent_layer", "first div. layer", "{:.0f}"),
    ("perplexity", "ppl", "{:.3f}"),
    ("perplexity_delta", "ppl delta", "{:+.3f}"),
    ("greedy_agreement", "argmax agree", "{:.3f}"),
    ("greedy_prefix_tokens", "greedy prefix", "{:.0f}"),
    ("weight_bytes", "weight MB", "{:.1f}"),
    ("weight_bytes_ratio", "bytes ratio", "{:.3f}"),
    ("quantize_build_seconds", "quantize s", "{:.1f}"),
]


def main(path: str) -> None:
    rows = list(csv.DictReader(open(path)))
    table: dict[tuple[str, str], dict[str, str]] = {}
    gates: dict[tuple[str, str], str] = {}
    for r in rows:
        if "test_quantized_logits_match_baseline" not in r["nodeid"]:
            continue
        key = (r["quant"], r["attention"])
        table.setdefault(key, {})[r["metric"]] = r["value"]
        if r["metric"] == "logits_cosine":
            gates[key] = r["threshold"]
    print(" ".join(f"{k}={rows[0][k] if rows else '?'}" for k in ("model", "device", "dtype")))
    print("| quant | attention | gate | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|" + "---|" * (len(COLUMNS) + 3))
    for key, vals in table.items():
        cells = []
        for metric, _, fmt in COLUMNS:
            v = vals.get(metric)
            if v in (None, ""):
                cells.append("")
                continue
            x = float(v) / 1e6 if metric == "weight_bytes" else float(v)
            cells.append(fmt.format(x))
        print(f"| {key[0]} | {key[1]} | {gates.get(key, '')} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
