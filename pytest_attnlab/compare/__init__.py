"""The regression gate: compare two runs metric by metric against thresholds (see cli.py)."""

from pytest_attnlab.lazy import exports

# Loaded on first use (PEP 562): a submodule's `from pytest_attnlab.compare import stats` runs no cli import.
__getattr__, __all__ = exports(__name__, {".cli": "compare main", ".thresholds": "Threshold"})
