"""Fixtures for the plugin's own tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def run_attnlab(pytester: pytest.Pytester):
    """Run pytest in a subprocess in the pytester dir, with the report dir inside it."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out", *args)

    return run
