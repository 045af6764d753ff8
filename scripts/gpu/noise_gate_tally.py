"""Tally scripts/gpu/noise_gate.sh's runs: the compare gate's false alarms on identical runs and how
often it catches the planted 10 % decode slowdown, with gpu.yml's default thresholds
(pytest_attnlab.compare.trials does the work).

    python scripts/gpu/noise_gate_tally.py OUT [--floor-runs 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_attnlab.compare.trials import tally

THRESHOLDS = ["tpot:+5%", "ttft:+10%", "tok_s:-5%", "cosine:-0.01"]  # gpu.yml's defaults


def _runs(root: Path, prefix: str, kind: str) -> list[Path]:
    """Complete runs only: a run cut off by a timeout has an empty benchmark.json."""
    found = sorted(root.glob(f"{prefix}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return [p / kind for p in found if (p / "benchmark.json").is_file() and (p / "benchmark.json").stat().st_size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--floor-runs", type=int, default=3, help="identical runs behind each trial's noise floors")
    args = ap.parse_args()
    for kind in ("metrics.csv", "benchmark.json"):
        identical, planted = _runs(args.out, "identical", kind), _runs(args.out, "planted", kind)
        for floor_runs in (args.floor_runs, 0):
            t = tally(identical, planted, THRESHOLDS, floor_runs)
            label = f"{kind}, {f'noise floors from {floor_runs} runs' if floor_runs else 'no noise floors'}"
            print(f"{label}: false alarms {t.false_alarms}/{t.pairs} identical pairs; "
                  f"planted 10 % caught {t.caught}/{t.planted}")  # fmt: skip
            for alarm in t.alarms:
                print(f"    false alarm {alarm}")
            for name, count in sorted(t.caught_by.items()):
                print(f"    planted run flagged by {name}: {count}")


if __name__ == "__main__":
    main()
