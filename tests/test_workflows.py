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
    script = re.sub(r"\s*\\\n\s*", " ", (ROOT / ".ci" / "gpu").read_text())  # continued lines joined
    assert re.search(r"suites/correctness --attnlab-device cuda", script)
    assert re.search(r"suites/perf --attnlab-device cuda .*--benchmark-json", script)
    assert "for kind in metrics.csv benchmark.json" in script
    assert 'python3 -m pytest_attnlab compare "$ATTNLAB_GPU_BASELINE/$kind" "$REPORTS/perf/$kind"' in script
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


def _expression(text: str, event: dict[str, Any], repository: str = "lab/pytest-attnlab") -> bool:
    """A GitHub Actions `if:` of ==, !=, &&, || and contains() over `github`, evaluated in Python."""
    py = text.replace("&&", " and ").replace("||", " or ").replace(".labels.*.name", ".label_names")
    assert set(re.findall(r"([A-Za-z_]+)\(", py)) <= {"contains"}, f"unsupported function in: {text}"

    class Obj(dict):  # github.event.x.y as attributes; a missing one is None, as in Actions
        def __getattr__(self, name: str) -> Any:
            value = self.get(name)
            return Obj(value) if isinstance(value, dict) else value

    pr = event.get("pull_request")
    if pr:
        pr["label_names"] = [label["name"] for label in pr.get("labels", [])]
    github = Obj(event_name=event["event_name"], repository=repository, event=event)
    return bool(eval(py, {"github": github, "contains": lambda seq, x: x in (seq or [])}))  # noqa: S307


def _pr(action: str, labels: list[str], fork: bool, label: str | None = None) -> dict[str, Any]:
    head = "someone/pytest-attnlab" if fork else "lab/pytest-attnlab"
    pull_request = {"labels": [{"name": n} for n in labels], "head": {"repo": {"full_name": head}}}
    event: dict[str, Any] = {"event_name": "pull_request", "action": action, "pull_request": pull_request}
    if label:
        event["label"] = {"name": label}
    return event


@pytest.mark.parametrize(
    "event,runs",
    [
        (_pr("synchronize", [], fork=True), False),  # a fork's pull request: nothing on the GPU host unapproved
        (_pr("labeled", ["gpu-ok"], fork=True, label="gpu-ok"), True),  # the maintainer's label approves it
        (_pr("synchronize", ["gpu-ok"], fork=True), False),  # new fork code after approval waits for a new label
        (_pr("labeled", ["gpu-ok", "docs"], fork=True, label="docs"), False),  # another label: no rerun
        (_pr("synchronize", ["gpu-ok"], fork=False), True),  # a branch of the repository, labelled
        (_pr("reopened", [], fork=False), False),
        ({"event_name": "push"}, True),
        ({"event_name": "schedule"}, True),
    ],
    ids=[
        "fork-unlabelled",
        "fork-labelled",
        "fork-push-after-label",
        "other-label",
        "branch-labelled",
        "branch-unlabelled",
        "push",
        "nightly",
    ],  # fmt: skip
)
def test_gpu_pull_requests_reach_the_runner_only_with_the_maintainers_label(event: dict[str, Any], runs: bool) -> None:
    wf = load(WORKFLOWS / "gpu.yml")
    assert "pull_request_target" not in wf["on"]  # it would hand the fork's code a write token and secrets
    assert set(wf["on"]["pull_request"]["types"]) <= {"labeled", "synchronize", "reopened"}
    assert _expression(wf["jobs"]["gate"]["if"], event) is runs
    assert "needs.gate.result != 'skipped'" in wf["jobs"]["vllm"]["if"]  # the vllm job waits on the same approval
    for job in wf["jobs"].values():
        checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
        assert checkout["with"]["persist-credentials"] is False  # no token left in .git for the PR's code


def test_gpu_runs_nightly() -> None:
    wf = load(WORKFLOWS / "gpu.yml")
    (cron,) = [s["cron"] for s in wf["on"]["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert (day, month, weekday) == ("*", "*", "*") and hour.isdigit() and minute.isdigit()
    gate = next(s for s in steps(wf) if s.get("name") == "The GPU gate (.ci/gpu)")
    # the nightly run also checks the gate itself: per cell false alarms and detections (.ci/gpu's noise stage)
    assert 'if [ "$GITHUB_EVENT_NAME" = schedule ]; then stages="$stages noise"; fi' in gate["run"]
    summary = next(s for s in steps(wf) if s.get("name", "").startswith("Job summary"))
    assert '"$REPORTS/noise/tally.txt"' in summary["run"]


def test_gpu_baselines_are_keyed_by_runner_and_gpu_model() -> None:
    wf = load(WORKFLOWS / "gpu.yml")
    job = wf["jobs"]["gate"]
    machine = next(s for s in job["steps"] if s.get("id") == "machine")
    assert "RUNNER_NAME" in machine["run"] and "nvidia-smi --query-gpu=name" in machine["run"]
    key = "${{ steps.machine.outputs.key }}"
    download, history = uses(wf, "dawidd6/action-download-artifact")
    assert download["with"]["name"] == f"gpu-baseline-{key}" and download["with"]["branch"] == "main"
    assert history["with"]["name"] == f"gpu-history-{key}" and history["with"]["branch"] == "main"
    publish = next(s for s in job["steps"] if s.get("name", "").startswith("Publish the new baseline"))
    assert publish["with"]["name"] == f"gpu-baseline-{key}" and "refs/heads/main" in publish["if"]
    assert "noise.json" in publish["with"]["path"]


def test_gpu_missing_baseline_fails_except_the_bootstrap_on_main() -> None:
    """The download may find nothing, but the gate step always sets ATTNLAB_GPU_BASELINE: compare then fails
    on the missing files; only a push to main without one bootstraps, and says so."""
    wf = load(WORKFLOWS / "gpu.yml")
    gate = next(s for s in steps(wf) if s.get("name") == "The GPU gate (.ci/gpu)")
    run = gate["run"]
    assert run.index("export ATTNLAB_GPU_BASELINE=baseline") < run.index("bash .ci/gpu")
    assert "if [ -f baseline" not in run  # the old silent skip
    boot = run.index("export ATTNLAB_GPU_BOOTSTRAP=1")
    assert run.rfind('[ "$GITHUB_EVENT_NAME" = push ] && [ ! -f baseline/metrics.csv ]', 0, boot) != -1
    assert "::notice::no baseline" in run[:boot]
    script = (ROOT / ".ci" / "gpu").read_text()
    assert 'if [ -z "${ATTNLAB_GPU_BASELINE+set}" ]' in script  # skipped only when unset (a run by hand)
    assert '[ "${ATTNLAB_GPU_BOOTSTRAP:-0}" = 1 ] && boot=(--bootstrap)' in script


def test_gpu_pull_requests_gate_ab_on_one_machine() -> None:
    """Pull requests: the ab stage, base and head measured interleaved in one job, gated by compare --ab."""
    wf = load(WORKFLOWS / "gpu.yml")
    gate = next(s for s in steps(wf) if s.get("name") == "The GPU gate (.ci/gpu)")
    assert (
        'stages="correctness perf ab"; export ATTNLAB_GPU_AB_BASE=${{ github.event.pull_request.base.sha }}'
        in gate["run"]
    )
    checkout = uses(wf, "actions/checkout")[0]
    assert checkout["with"]["fetch-depth"] == 0  # the base commit must be in the clone
    script = re.sub(r"\s*\\\n\s*", " ", (ROOT / ".ci" / "gpu").read_text())
    ab = script[script.index("    ab)") : script.index(";;", script.index("    ab)"))]
    assert 'git worktree add --detach "$tree" "$base"' in ab
    loop = ab[ab.index("for i in") : ab.index("done")]
    assert loop.index('small "${a[-1]}"') < loop.index('small "${b[-1]}"')  # A then B in each round: ABAB...
    assert 'compare --ab "${a[@]}" --vs "${b[@]}"' in ab


def test_gpu_main_runs_keep_the_history_and_summarise_it() -> None:
    """Each main run's perf metrics join the kept runs (an artifact carried to the next main run, no external
    service), history.html is drawn from them, and the job summary links it and shows the newest run's table."""
    wf = load(WORKFLOWS / "gpu.yml")
    job = wf["jobs"]["gate"]
    gate = next(s for s in job["steps"] if s.get("name") == "The GPU gate (.ci/gpu)")
    assert 'stages="correctness perf compare floors history"' in gate["run"]
    assert "export ATTNLAB_GPU_HISTORY=history" in gate["run"]
    keep = next(s for s in job["steps"] if s.get("id") == "history")
    key = "${{ steps.machine.outputs.key }}"
    assert keep["with"]["name"] == f"gpu-history-{key}" and keep["with"]["path"] == "history"
    assert "refs/heads/main" in keep["if"] and keep["with"]["overwrite"] is True
    names = [s.get("name", "") for s in job["steps"]]
    assert names.index(keep["name"]) > names.index(gate["name"])
    summary = next(s for s in job["steps"] if s.get("name", "").startswith("Job summary"))
    assert "steps.history.outputs.artifact-url" in summary["run"]
    script = (ROOT / ".ci" / "gpu").read_text()
    stage = script[script.index("    history)") : script.index(";;", script.index("    history)"))]
    assert 'cp "$REPORTS"/perf/{metrics.csv,benchmark.json}' in stage
    assert '--markdown "$REPORTS/history.md"' in stage and "ATTNLAB_GPU_HISTORY_KEEP:-60" in stage


def test_gpu_noise_stage_has_the_trials_the_bar_needs() -> None:
    """The bar is stated over 20 identical pairs and 20 planted trials per cell: K choose 2 and K x M."""
    script = (ROOT / ".ci" / "gpu").read_text()
    k = int(re.search(r"ATTNLAB_GPU_NOISE_K:-(\d+)", script)[1])  # type: ignore[index]
    m = int(re.search(r"ATTNLAB_GPU_NOISE_M:-(\d+)", script)[1])  # type: ignore[index]
    assert k * (k - 1) // 2 >= 20 and k * m >= 20
    planted_after = [i for i in range(1, k + 1) if i * m // k > (i - 1) * m // k]
    assert len(planted_after) == m and planted_after[-1] == k  # spread over the K runs, not bunched at the start
    assert "python3 -m pytest_attnlab noise-tally" in script
