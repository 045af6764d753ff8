"""Fixtures for the plugin's own tests."""

from __future__ import annotations

import os

import pytest

# pytester's in-process runs drop the modules they imported when they end; torch's C extension
# cannot be imported a second time in one process, so load it once here, before any such run
# (the plugin itself no longer imports torch at startup).
import torch  # noqa: F401

# ... and what transformers' models import from torch.distributed (its collectives, DTensor, symmetric
# memory): a second import registers their torch libraries twice and fails, so a model test after the
# first in-process run that loaded them (test_backends_options's, run alone) could not import Qwen2ForCausalLM
import transformers.modeling_utils  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `pytest tests -n N` each worker process has xdist's PYTEST_XDIST_WORKER (and _WORKER_COUNT,
    _TESTRUNUID) in its environment, and the pytest runs a test starts (pytester, subprocess) inherit it.
    pytest-benchmark reads PYTEST_XDIST_WORKER and, taking the inner run for an xdist worker, disables
    its benchmarks: `benchmark.stats` is None and --benchmark-json is never written. The inner runs are
    their own sessions (and start their own workers with -n), so tests run without these variables; the
    worker itself still knows it is one from `config.workerinput`, which is what xdist and the plugin read."""
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def run_attnlab(pytester: pytest.Pytester):
    """Run pytest in a subprocess in the pytester dir, with the report dir inside it."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-report-dir", "out", *args)

    return run
