"""The table of scripts/gpu/fast_variants.sh's runs: TPOT, MBU, TTFT, compile time per variant and cell,
then the greedy / logits checks.   python scripts/gpu/fast_variants_table.py REPORTS"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

VARIANT_KEYS = ("compile", "compile_scope", "fast_attention", "fast_weights", "fast_quant")
CHECKS = ("greedy_tokens_agree", "int4_logit_cosine_min", "logits_cosine_min")


def main(root: Path) -> None:
    cells: dict[tuple, dict] = {}
    checks = []
    for path in sorted(root.glob("*/metrics.csv")):
        for r in csv.DictReader(open(path, newline="", encoding="utf-8")):
            e = json.loads(r["extra"] or "{}")
            value = float(r["value"]) if r["value"] not in ("", "nan") else math.nan
            if "test_fast_variant" in r["nodeid"]:
                key = (path.parent.name, e.get("prompt_len"), e.get("batch"))
                c = cells.setdefault(key, {"variant": "/".join(str(e.get(k, "")) for k in VARIANT_KEYS)})
                c[r["metric"]] = value
                if r["metric"] == "compile_s":
                    c["cache"] = e.get("inductor_cache", "")
            elif r["metric"] in CHECKS:
                checks.append((path.parent.name, r["nodeid"].split("::")[-1], r["metric"], value, r["threshold"]))
    print(
        "| run | variant (compile/scope/attention/weights/quant) | prompt | batch | TPOT ms | MBU % | TTFT ms "
        "| compile s (cache) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (run, p, b), c in cells.items():
        comp = f"{c['compile_s']:.1f} ({c.get('cache', '')})" if "compile_s" in c else "-"
        tpot, mbu, ttft = (c.get(k, math.nan) for k in ("tpot", "mbu", "ttft"))
        print(f"| {run} | {c['variant']} | {p} | {b} | {tpot * 1e3:.3f} | {mbu:.1f} | {ttft * 1e3:.1f} | {comp} |")
    print("\n| run | test | check | value | threshold |\n|---|---|---|---|---|")
    for run, test, metric, value, threshold in checks:
        print(f"| {run} | {test} | {metric} | {value:.5g} | {threshold} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
