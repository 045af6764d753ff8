"""The regression gate: compare two runs metric by metric against thresholds (see cli.py)."""

from pytest_attnlab.lazy import exports

# Loaded on first use (PEP 562): a submodule's `from pytest_attnlab.compare import stats` runs no cli import.
_EXPORTS = {"compare": "pytest_attnlab.compare.cli", "main": "pytest_attnlab.compare.cli",
            "Threshold": "pytest_attnlab.compare.thresholds"}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = exports(__name__, _EXPORTS)
