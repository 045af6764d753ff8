"""The environment block of summary.md and the experiment JSON: what a reader needs to reproduce."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "pytest-attnlab",
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "gguf",
    "numpy",
    "pytest",
    "pytest-benchmark",
    "pytest-html",
    "pytest-xdist",
    "bitsandbytes",
    "vllm",
    "nvidia-ml-py",
)


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpus() -> list[dict[str, str]]:
    """GPU name, driver and memory from nvidia-smi (no CUDA context is created); [] without one."""
    out = _run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader"])
    keys = ("index", "name", "driver", "memory")
    return [
        dict(zip(keys, (c.strip() for c in line.split(",")), strict=False)) for line in out.splitlines() if line.strip()
    ]


def collect(rootdir: Path, args: list[str]) -> dict[str, Any]:
    torch_info: dict[str, Any] = {}
    if "torch" in sys.modules:  # only if the run already paid for the import
        torch = sys.modules["torch"]
        torch_info = {"cuda": getattr(torch.version, "cuda", None), "threads": torch.get_num_threads()}
    sha = _run(["git", "rev-parse", "HEAD"], cwd=rootdir)
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=rootdir)) if sha else False
    return {
        "command": shlex.join(["python", "-m", "pytest", *args]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "gpus": gpus(),
        "torch": torch_info,
        "packages": package_versions(),
        "git_sha": sha + ("-dirty" if dirty else "") if sha else "",
    }
