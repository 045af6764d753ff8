"""The regression gate: compare two runs metric by metric against thresholds (see cli.py)."""

from pytest_attnlab.compare.cli import compare, main
from pytest_attnlab.compare.thresholds import Threshold

__all__ = ["Threshold", "compare", "main"]
