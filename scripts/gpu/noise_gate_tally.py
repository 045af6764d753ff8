"""Tally scripts/gpu/noise_gate.sh's runs per cell: `python -m pytest_attnlab noise-tally OUT/noise` does the work.

python scripts/gpu/noise_gate_tally.py OUT/noise [--floor-runs 3] [-t tpot:+5% ...]
"""

from __future__ import annotations

import sys

from pytest_attnlab.compare.tally import main

if __name__ == "__main__":
    sys.exit(main())
