"""The GitHub Actions workflows validate (actionlint if on PATH, else the SchemaStore JSON schema
vendored by check-jsonschema) and do what CI needs: lint, tests, caches, the GPU gate."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = [WORKFLOWS / "ci.yml", WORKFLOWS / "gpu.yml"]


def load(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as True
        data["on"] = data.pop(True)
    return data


def steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def runs(wf: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in steps(wf))


def uses(wf: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(wf) if s.get("uses", "").startswith(action + "@")]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_workflow_is_valid(path: Path) -> None:
    actionlint = shutil.which("actionlint")
    if actionlint:
        proc = subprocess.run([actionlint, str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema check-jsonschema")
    vendored = pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (vendored schema)")
    schema_path = Path(vendored.__file__).parent / "builtin_schemas" / "vendor" / "github-workflows.json"
    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load(path)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_schema_check_catches_a_broken_workflow() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    vendored = pytest.importorskip("check_jsonschema")
    schema_path = Path(vendored.__file__).parent / "builtin_schemas" / "vendor" / "github-workflows.json"
    validator = jsonschema.Draft7Validator(json.loads(schema_path.read_text()))
    for breakage in ("typo", "no-runs-on", "bad-timeout"):
        broken = load(FILES[0])
        if breakage == "typo":
            broken["trigger"] = broken.pop("on")
        elif breakage == "no-runs-on":
            del broken["jobs"]["lint"]["runs-on"]
        else:
            broken["jobs"]["lint"]["timeout-minutes"] = "ten"
        assert list(validator.iter_errors(broken)), breakage


def test_ci_lints_tests_and_caches() -> None:
    wf = load(WORKFLOWS / "ci.yml")
    text = runs(wf)
    assert "ruff check" in text
    assert re.search(r"^pytest tests\b", text, re.M)
    assert re.search(r"^pytest suites/correctness .*--attnlab-model embedded", text, re.M)
    # pinned CPU torch before the package, so pip never swaps in a CUDA build
    torch_at = text.index("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert torch_at < text.index('pip install -c /tmp/torch-constraint.txt "${lock[@]}" -e ".[test,bnb]"')
    # the lock (what the README installs) and the newest releases, side by side
    assert wf["jobs"]["test"]["strategy"]["matrix"]["deps"] == ["locked", "newest"]
    assert '[ "${{ matrix.deps }}" = locked ] && lock=(-c constraints.txt)' in text
    assert any(s.get("with", {}).get("cache") == "pip" for s in uses(wf, "actions/setup-python"))
    assert any(s["with"]["path"] == "~/.cache/pytest-attnlab" for s in uses(wf, "actions/cache"))


def test_gpu_runs_the_gate_script_and_uploads() -> None:
    """gpu.yml runs .ci/gpu (what ran on the H200), which runs both suites and the compare gate."""
    wf = load(WORKFLOWS / "gpu.yml")
    job = wf["jobs"]["gate"]
    assert "gpu" in job["runs-on"] and "self-hosted" in job["runs-on"]
    text = runs(wf)
    assert 'bash .ci/gpu "$REPORTS"' in text
    assert "pipefail" in next(s for s in steps(wf) if s.get("name") == "The GPU gate (.ci/gpu)")["shell"]
    script = (ROOT / ".ci" / "gpu").read_text().replace("\\\n", " ")
    assert re.search(r"suites/correctness --attnlab-device cuda", script)
    assert re.search(r"suites/perf --attnlab-device cuda .*--benchmark-json", script)
    assert 'python3 -m pytest_attnlab compare "$ATTNLAB_GPU_BASELINE/metrics.csv"' in script
    assert 'python3 -m pytest_attnlab compare "$ATTNLAB_GPU_BASELINE/benchmark.json"' in script
    uploaded = " ".join(str(s["with"]["path"]) for s in uses(wf, "actions/upload-artifact"))
    assert "REPORTS" in uploaded and "metrics.csv" in uploaded and "benchmark.json" in uploaded


def test_gpu_runs_the_vllm_suites_with_exported_quantizers() -> None:
    wf = load(WORKFLOWS / "gpu.yml")
    job = wf["jobs"]["vllm"]
    assert "gpu" in job["runs-on"] and job["needs"] == "gate"
    text = " ".join(str(s.get("run", "")) for s in job["steps"])
    assert ".[test,gpu,vllm,export]" in text and "ATTNLAB_GPU_STAGES=vllm bash .ci/gpu" in text
    script = (ROOT / ".ci" / "gpu").read_text()
    assert "suites/correctness/test_vllm_formats.py" in script and "--attnlab-quant rtn-int4-g64-zp" in script


def test_vllm_export_check_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vllm_export_check.py"), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "prepare" in out.stdout and "check" in out.stdout


def test_workflow_flags_exist(pytester: pytest.Pytester) -> None:
    """Every --attnlab-* flag the workflows pass is a real option (a rename would break CI silently)."""
    flags = set()
    for path in [*FILES, ROOT / ".ci" / "gpu", ROOT / ".ci" / "run"]:
        flags |= set(re.findall(r"--attnlab-[a-z-]+", path.read_text()))
    help_text = pytester.runpytest("--help").stdout.str()
    missing = sorted(f for f in flags if f not in help_text)
    assert not missing, missing
    for script in re.findall(r"python (scripts/\S+\.py)", "".join(p.read_text() for p in FILES)):
        assert (ROOT / script).is_file(), script
