"""Fixtures for the plugin's own tests."""

from __future__ import annotations

import pytest

# pytester's in-process runs drop the modules they imported when they end; torch's C extension
# cannot be imported a second time in one process, so load it once here, before any such run
# (the plugin itself no longer imports torch at startup).
import torch  # noqa: F401


@pytest.fixture
def run_attnlab(pytester: pytest.Pytester):
    """Run pytest in a subprocess in the pytester dir, with the report dir inside it."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out", *args)

    return run
