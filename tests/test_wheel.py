"""The built wheel is complete: it carries every data file the package reads, and a non-editable
install of it runs a quantizer case and a correctness case.

The wheel goes into a fresh venv that sees this environment's packages (torch, transformers, the
embedded model) behind its own site-packages, so `pytest_attnlab` resolves to the wheel's copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pytest_attnlab"

pytestmark = pytest.mark.skipif(
    not (REPO / "pyproject.toml").exists(), reason="needs the source tree (pyproject.toml) to build the wheel"
)


def _package_data_files() -> set[str]:
    """Every non-Python file under pytest_attnlab/ in the source tree (caches left out)."""
    return {
        p.relative_to(REPO).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the tree without build/, egg-info or venv leftovers, as from a fresh clone."""
    src = tmp_path_factory.mktemp("src") / "pytest-attnlab"
    top_level = {"build", "dist", ".git", "reports", ".device", ".whl"}

    def venv(name: str) -> bool:  # .ci/run's .venv and .venv-newest, .ci/vllm/.venv: GBs each
        return name == ".venv" or name.startswith(".venv-")

    def leftovers(folder: str, names: list[str]) -> set[str]:
        at_top = Path(folder) == REPO
        return {
            n for n in names if (at_top and n in top_level) or venv(n) or n.endswith(".egg-info") or n == "__pycache__"
        }

    shutil.copytree(REPO, src, ignore=leftovers)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("pytest_attnlab-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed (not editable) and this environment's packages behind it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # a wheel is a zip laid out for site-packages
    # Path lines in a .pth are appended after the venv's own site-packages: the wheel's copy wins. Every
    # site-packages folder this interpreter sees (a venv layered on another one has several).
    parents = [sysconfig.get_path("purelib"), *(p for p in sys.path if p.endswith("site-packages"))]
    (site / "zz_parent_env.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    return python


def test_wheel_carries_every_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(_package_data_files() - names)
    assert not missing, f"declare these in [tool.setuptools.package-data]: {missing}"
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_runs_a_quantizer_case_and_a_correctness_case(wheel_python: Path, tmp_path: Path) -> None:
    """Runs the real suite files from a folder outside the repo, so nothing imports the source tree."""
    suites = tmp_path / "suites"
    shutil.copytree(REPO / "suites" / "correctness", suites, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [
        str(wheel_python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
        "--attnlab-report-dir", str(tmp_path / "reports"), "--attnlab-quant", "rtn-int8",
        "suites/test_quantization.py::test_quantized_logits_match_baseline",
        "suites/test_tokenizer.py",
        "-k", "rtn-int8 or round_trip",
    ]  # fmt: skip
    probe = 'import pytest_attnlab.quant.texts as t; print(t.__file__); print(len(t.read("calibration_text.txt")))'
    where = subprocess.run([str(wheel_python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(wheel_python.parent.parent) in where.stdout.splitlines()[0], where.stdout  # the wheel's copy
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1] and "skipped" not in run.stdout.splitlines()[-1], run.stdout
