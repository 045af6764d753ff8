"""xdist on several GPUs: one worker per GPU, each pinned by its worker id (gwN -> the N-th GPU).

The controller lists the visible GPUs (nvidia-smi, so it never creates a CUDA context) and hands
the list to every worker; a worker sets CUDA_VISIBLE_DEVICES to its GPU in `pytest_configure`,
before anything imports torch, so `cuda` / `cuda:0` inside that worker is its own GPU. With
`-n auto`, the worker count is the GPU count. On CPU (or `--attnlab-device cpu`) xdist behaves as usual.

`ATTNLAB_GPUS=0,1` overrides detection (tests fake a multi-GPU machine with it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping

WORKERINPUT_KEY = "attnlab_gpus"
_WORKER = re.compile(r"^gw(\d+)$")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def nvidia_smi_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def visible_gpus(env: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPU ids a worker may be pinned to: ATTNLAB_GPUS, else CUDA_VISIBLE_DEVICES, else 0..count-1."""
    env = os.environ if env is None else env
    if "ATTNLAB_GPUS" in env:
        return _split(env["ATTNLAB_GPUS"])
    count = nvidia_smi_count() if count is None else count
    if count == 0:
        return []
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split(env["CUDA_VISIBLE_DEVICES"])[:count]
    return [str(i) for i in range(count)]


def worker_index(worker_id: str) -> int:
    match = _WORKER.match(worker_id)
    if not match:
        raise ValueError(f"not an xdist worker id: {worker_id!r} (expected gw0, gw1, ...)")
    return int(match.group(1))


def gpu_for_worker(worker_id: str, gpus: list[str]) -> str | None:
    """gwN -> gpus[N % len(gpus)]: more workers than GPUs share round-robin; no GPUs -> None."""
    if not gpus:
        return None
    return gpus[worker_index(worker_id) % len(gpus)]


def pin(workerinput: Mapping[str, object], env: dict[str, str] | None = None) -> str | None:
    """In a worker: set CUDA_VISIBLE_DEVICES to this worker's GPU; returns it (None: left alone)."""
    env = os.environ if env is None else env
    gpus = workerinput.get(WORKERINPUT_KEY)
    if not isinstance(gpus, list) or not gpus:
        return None
    gpu = gpu_for_worker(str(workerinput["workerid"]), [str(g) for g in gpus])
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        warnings.warn(
            f"CUDA was initialised before xdist pinning; worker keeps all GPUs (wanted GPU {gpu})",
            stacklevel=2,
        )
        return None
    env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu


def cpu_thread_share(workerinput: Mapping[str, object] | None) -> int | None:
    """Torch threads for one xdist worker on CPU: the cores this process may use ÷ the worker count
    (at least 1); None outside xdist. Without it every worker runs torch's default (all cores), and
    2 workers on 2 cores ran the correctness suite 4x slower than one process."""
    if not workerinput or "workercount" not in workerinput:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(workerinput["workercount"]))
