"""pytest-attnlab plugin: options, hooks and thin fixtures. Heavy imports happen inside fixtures."""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import pytest

from pytest_attnlab import hookspec, oom
from pytest_attnlab.experiments import EXPERIMENT_KEY
from pytest_attnlab.metrics import tolerance
from pytest_attnlab.models.candidate import CandidateUnavailable, mismatch
from pytest_attnlab.options import OPTIONS, area_hooks, explicitly_used, selection
from pytest_attnlab.registry import register_all
from pytest_attnlab.reports import html as html_report
from pytest_attnlab.session import RECORDER_KEY, SESSION_KEY, AttnlabSession, uses_attnlab
from pytest_attnlab.status_line import StatusLine

# Each feature area owns a sub-plugin with its options and fixtures.
pytest_plugins = [
    "pytest_attnlab.experiments.plugin",
    "pytest_attnlab.paths.plugin",
    "pytest_attnlab.quant.plugin",
    "pytest_attnlab.attention.plugin",
    "pytest_attnlab.case",  # before perf, which imports it (a module imported first is not assert-rewritten)
    "pytest_attnlab.perf.plugin",
    "pytest_attnlab.reports.plugin",
    "pytest_attnlab.backends.plugin",
]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


pytest_addoption, pytest_attnlab_options = area_hooks(OPTIONS)
MARKERS = (
    "gpu: needs a CUDA device; skipped with the reason on CPU",
    "attnlab_gate(**tolerances): this test's regression tolerance per metric, e.g. tpot='+10%': recorded in "
    "metrics.csv's threshold column, where compare and history gate by it instead of --threshold",
    "quant(*names): run `quantizer` with these quantizers instead of --attnlab-quant",
    "attention(*names): run attention_patch with these variants instead of --attnlab-attn",
)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    if explicitly_used(config):  # the registration hooks, then every option: a bad value fails now
        plan_run_paths(config, selection(config))
    session = AttnlabSession(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "attnlab_session")
    config.pluginmanager.register(StatusLine(config, session.steps), "attnlab_status_line")
    if session.active:
        html_report.default_report_path(config, session.layout)


def plan_run_paths(config: pytest.Config, values: dict[str, Any]) -> None:
    """An experiment's `suites:` are the run's paths when the command line names none."""
    experiment = values["config"]
    if experiment is not None and experiment.suites and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(config.rootpath / suite) for suite in experiment.suites]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the run id to each worker so their CSV parts merge into one file."""
    node.workerinput["attnlab_run_id"] = node.config.stash[SESSION_KEY].run_id


def pytest_sessionstart(session: pytest.Session) -> None:
    attnlab = session.config.stash[SESSION_KEY]
    if attnlab.settings.device != "auto":
        attnlab.settings.resolved_device()  # a UsageError now beats one error per test later
    if attnlab.settings.candidate is not None:
        check_candidate(attnlab.settings)
    if attnlab.active:
        attnlab.start()


def check_candidate(settings: Any) -> None:
    """A candidate whose shape or tokenizer differs from the reference's is a usage error, before any test."""
    try:
        why = mismatch(settings.model, settings.candidate, settings.tokenizer)
    except (OSError, ValueError) as exc:  # no config.json there, no network for a hub id, a bad tokenizer
        why = f"its config or tokenizer cannot be read ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
    if why:
        raise pytest.UsageError(
            f"--attnlab-candidate {settings.candidate.label} cannot be compared with --attnlab-model "
            f"{settings.model.label}: {why}"
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    attnlab = session.config.stash[SESSION_KEY]
    if any(uses_attnlab(item) for item in items):
        register_all(session.config)  # the registration hooks fire before a test loads a model
        if not attnlab.active:
            attnlab.activate_late(session)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[SESSION_KEY].finish()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """An experiment run whose tests recorded nothing says so, rather than passing as the experiment."""
    experiment, attnlab = config.stash.get(EXPERIMENT_KEY, None), config.stash[SESSION_KEY]
    csv = attnlab.layout.metrics_csv
    recorded = csv.is_file() and len(csv.read_text().splitlines()) > 1
    if experiment is not None and attnlab.active and not recorded and not config.option.collectonly:
        terminalreporter.write_line(
            f"attnlab: experiment {experiment.experiment_name!r} recorded no metric rows: no test run measures "
            "it; name the suites to run (`suites:` in the experiment file, or paths on the command line)",
            red=True,
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash[SESSION_KEY].settings
    lines = [f"attnlab: model={s.model.label} device={s.device} dtype={s.dtype} report-dir={s.report_dir}"]
    if s.candidate is not None or s.tokenizer:
        lines.append(f"attnlab: candidate={s.candidate.label if s.candidate else '-'} tokenizer={s.tokenizer or 'own'}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    if item.get_closest_marker("gpu"):
        device = item.config.stash[SESSION_KEY].settings.resolved_device()
        if not device.startswith("cuda"):
            pytest.skip(f"needs a CUDA GPU (device resolved to {device!r}); run on a GPU with --attnlab-device cuda")
    try:
        return (yield)
    except Exception as exc:  # out of device memory fails this case only, with the memory freed
        oom.fail_case_if_oom(exc, item.nodeid)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        return (yield)
    except Exception as exc:
        oom.fail_case_if_oom(exc, item.nodeid)
        skip_if_unsupported(exc)
        raise


def skip_if_unsupported(exc: BaseException) -> None:
    """A decode path that cannot run this model (the fast path's `UnsupportedModel`: another family,
    sliding windows, quantized linears) skips the test with its reason instead of failing it."""
    static_decode = sys.modules.get("pytest_attnlab.paths.static_decode")  # never imported just to check
    if static_decode is not None and isinstance(exc, static_decode.UnsupportedModel):
        pytest.skip(f"{type(exc).__name__}: {exc}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if item.config.stash[SESSION_KEY].active:
        report.attnlab = True  # under xdist this tells the controller that the run uses attnlab
    recorder = item.stash.get(RECORDER_KEY, None)
    if recorder is not None and report.when == "call":
        html_report.add_extras(report, recorder)
    return report


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def attnlab_session(pytestconfig: pytest.Config) -> AttnlabSession:
    """The run's AttnlabSession: settings, report paths, CSV writer, model cache."""
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def attnlab_settings(attnlab_session: AttnlabSession) -> Any:
    """The resolved --attnlab-* settings."""
    return attnlab_session.settings


@pytest.fixture(scope="session")
def attnlab_model(attnlab_session: AttnlabSession) -> Any:
    """The model under test (--attnlab-model) on --attnlab-device in --attnlab-dtype: a LoadedModel."""
    return attnlab_session.model()


@pytest.fixture(scope="session")
def attnlab_candidate(attnlab_session: AttnlabSession) -> Any:
    """The --attnlab-candidate checkpoint (a CandidateModel), loaded like --attnlab-model, which is its
    reference; skips without one, or with the extra to install when it cannot load here."""
    if attnlab_session.settings.candidate is None:
        pytest.skip(
            "no --attnlab-candidate: pass a checkpoint folder or Hugging Face id to compare with --attnlab-model"
        )
    try:
        return attnlab_session.candidate()
    except CandidateUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def model_factory(attnlab_session: AttnlabSession) -> Any:
    """`model_factory(spec=None, dtype=None, device=None, attn_implementation="sdpa")` -> LoadedModel.

    Each combination loads once per run; `spec` defaults to --attnlab-model.
    """
    return attnlab_session.model


@pytest.fixture
def metrics(request: pytest.FixtureRequest, attnlab_session: AttnlabSession) -> Any:
    """Record named metrics for this test: `metrics.record("cosine", 0.998, threshold=0.95)`.

    Every row reaches reports/metrics.csv at once; `metrics.table(title, rows)` adds a table to
    this test's entry in report.html.
    """
    if "attnlab_model" in request.fixturenames:  # loaded first, so its notes (eager fallback, no tokenizer)
        request.getfixturevalue("attnlab_model")  # join this test's context
    recorder = attnlab_session.recorder(request.node.nodeid)
    recorder.tolerances = _tolerances(request)
    request.node.stash[RECORDER_KEY] = recorder
    return recorder


def _tolerances(request: pytest.FixtureRequest) -> dict[str, str]:
    """The experiment's `gate:`, then each `attnlab_gate` marker from the module's to the test's own (the
    closest wins)."""
    experiment = request.config.stash.get(EXPERIMENT_KEY, None)
    out = dict(experiment.gate) if experiment is not None else {}
    for mark in reversed(list(request.node.iter_markers("attnlab_gate"))):
        out.update(tolerance.parse(mark.kwargs, f"{request.node.nodeid}: @pytest.mark.attnlab_gate"))
    return out


@pytest.fixture(scope="session")
def layer_probe() -> Any:
    """Per-layer capture and diff: `layer_probe.capture(model, ids)`, `layer_probe.diff(ref, cand)`."""
    from pytest_attnlab import probe  # torch: only once a test uses it

    return probe
