"""xdist on GPUs: worker gwN is pinned to the N-th visible GPU; tested on CPU with a faked GPU list."""

from __future__ import annotations

import pytest

from pytest_attnlab import xdist_gpu


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        ({}, 0, []),
        ({}, 4, ["0", "1", "2", "3"]),
        ({"CUDA_VISIBLE_DEVICES": "2,5"}, 2, ["2", "5"]),
        ({"CUDA_VISIBLE_DEVICES": "2,5"}, 0, []),  # no driver: nothing to pin to
        ({"ATTNLAB_GPUS": "3, 7"}, 0, ["3", "7"]),  # explicit override wins
    ],
)
def test_visible_gpus(env: dict, count: int, expected: list) -> None:
    assert xdist_gpu.visible_gpus(env, count=count) == expected


def test_gpu_for_worker_round_robin() -> None:
    gpus = ["4", "5", "6"]
    assert [xdist_gpu.gpu_for_worker(f"gw{i}", gpus) for i in range(5)] == ["4", "5", "6", "4", "5"]
    assert xdist_gpu.gpu_for_worker("gw0", []) is None
    with pytest.raises(ValueError, match="expected gw0"):
        xdist_gpu.gpu_for_worker("master", gpus)


def test_pin_sets_cuda_visible_devices() -> None:
    env: dict[str, str] = {}
    assert xdist_gpu.pin({"workerid": "gw1", xdist_gpu.WORKERINPUT_KEY: ["0", "1"]}, env) == "1"
    assert env == {"CUDA_VISIBLE_DEVICES": "1"}
    untouched: dict[str, str] = {}
    assert xdist_gpu.pin({"workerid": "gw1"}, untouched) is None and untouched == {}


PINNED = """
import os

def test_where(metrics, worker_id):
    metrics.record("visible", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), worker=worker_id)
"""


PINNED_MANY = """
import os
import pytest

@pytest.mark.parametrize("i", range(6))
def test_where(metrics, worker_id, i):
    metrics.record("visible", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), worker=worker_id)
"""


def _visible_by_worker(pytester: pytest.Pytester) -> dict[str, set[str]]:
    import csv
    import json

    with open(pytester.path / "out" / "metrics.csv", newline="") as fh:
        out: dict[str, set[str]] = {}
        for row in csv.DictReader(fh):
            out.setdefault(json.loads(row["extra"])["worker"], set()).add(row["value"])
    return out


def test_each_worker_pinned_to_its_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("ATTNLAB_GPUS", "3,5")  # a faked 2-GPU machine
    pytester.makepyfile(PINNED_MANY)
    result = pytester.runpytest_subprocess("-n", "auto", "--attnlab-report-dir", "out", "-p", "no:html")
    result.stdout.fnmatch_lines(["*2 workers*"])  # -n auto: one worker per GPU
    result.assert_outcomes(passed=6)
    assert _visible_by_worker(pytester) == {"gw0": {"3"}, "gw1": {"5"}}


def test_cpu_device_leaves_xdist_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("ATTNLAB_GPUS", "3,5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile(PINNED)
    args = ("-n", "2", "--attnlab-device", "cpu", "--attnlab-report-dir", "out", "-p", "no:html")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert set().union(*_visible_by_worker(pytester).values()) == {"unset"}
