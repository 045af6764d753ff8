"""The run's state: resolved settings, report paths, the CSV writer and the loaded-model cache.

Built once in `pytest_configure`, stored on the config and registered as a plugin (like
pytest-benchmark's BenchmarkSession); nothing lives in module globals.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_attnlab import options as opts
from pytest_attnlab.metrics.csv_file import CsvWriter, merge
from pytest_attnlab.metrics.recorder import MetricRecorder
from pytest_attnlab.metrics.row import MetricRow
from pytest_attnlab.models.candidate import load_candidate
from pytest_attnlab.models.loader import LoadOptions, load_model
from pytest_attnlab.models.spec import ModelSpec, parse_model
from pytest_attnlab.progress import StepTime
from pytest_attnlab.reports import html
from pytest_attnlab.reports.layout import ReportLayout
from pytest_attnlab.xdist_gpu import cpu_thread_share

_DTYPES_BY_DEVICE = {"cpu": "float32", "cuda": "bfloat16"}


@dataclass(frozen=True)
class Settings:
    model: ModelSpec
    device: str  # as given: auto | cpu | cuda | cuda:N
    dtype: str  # as given: auto | float32 | float16 | bfloat16
    report_dir: Path
    logits_cosine: float
    tokenizer: str | None = None  # borrowed for `model`: "embedded" or a folder
    candidate: ModelSpec | None = None  # compared against `model` (suites/correctness/test_candidate.py)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        values = opts.selection(config)
        return cls(**{o.dest.removeprefix("attnlab_"): values[o.name] for o in opts.OPTIONS})

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise pytest.UsageError(
                f"--attnlab-device {self.device}: CUDA is not available here (torch {torch.__version__}); "
                "use cpu or auto"
            )
        return self.device

    def resolved_dtype(self) -> Any:
        import torch

        name = self.dtype
        if name == "auto":
            name = _DTYPES_BY_DEVICE[self.resolved_device().split(":")[0]]
        return getattr(torch, name)


def uses_attnlab(item: pytest.Item) -> bool:
    """The test needs one of pytest-attnlab's fixtures, directly or through another fixture."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(
        getattr(d.func, "__module__", "").startswith("pytest_attnlab.") for chain in defs.values() for d in chain
    )


def worker_id(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


class AttnlabSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = Settings.from_config(config)
        self.worker = worker_id(config)
        workerinput = getattr(config, "workerinput", None) or {}
        self.run_id = workerinput.get("attnlab_run_id") or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.report_dir = Path(config.invocation_params.dir, self.settings.report_dir)
        self.layout = ReportLayout(self.report_dir)
        self._writer: CsvWriter | None = None
        self._models: dict[tuple, Any] = {}
        self.recorders: list[MetricRecorder] = []
        #: finished progress steps (name, seconds, test), for summary.md; xdist workers' arrive at their end
        self.steps: list[StepTime] = []
        #: True once the run uses pytest-attnlab (an --attnlab-* option or ini key, or a test using one
        #: of its fixtures); until then the plugin writes nothing and imports no torch.
        self.active = opts.explicitly_used(config)
        self.early_reports: list[pytest.TestReport] = []  # xdist controller, until active
        self._pytest_session: pytest.Session | None = None

    # -- CSV -------------------------------------------------------------------------------------
    @property
    def part_path(self) -> Path:
        """This process's CSV: the final file, or a per-worker part merged at the end under xdist."""
        return self.layout.metrics_csv if self.worker is None else self.layout.worker_csv(self.run_id, self.worker)

    def write_row(self, row: MetricRow) -> None:
        if self._writer is None:
            self._writer = CsvWriter(self.part_path)
        self._writer.write(row)
        self.config.hook.pytest_attnlab_metric_recorded(row=row)

    def start(self) -> None:
        """Create (truncate) metrics.csv so every run's file holds that run's rows only."""
        if self.worker is None and self._writer is None:
            self._writer = CsvWriter(self.layout.metrics_csv)

    def activate_late(self, session: pytest.Session) -> None:
        """The run turned out to use attnlab (a test needs its fixtures): start the CSV and report.html
        as an explicit option would have at configure, with the reports seen so far."""
        self.active = True
        self.start()
        html.enable_late(session, self.layout, self.early_reports)
        self.early_reports.clear()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._pytest_session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """xdist controller: the workers collect, so a worker's flagged report is the first sign of use."""
        if self.active or self.worker is not None or self._pytest_session is None:
            return
        self.early_reports.append(report)  # a plugin registered now misses this call: replayed too
        if getattr(report, "attnlab", False):
            self.activate_late(self._pytest_session)

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.worker is None:
            parts = self.layout.worker_csvs(self.run_id)
            if parts:
                merge(parts, self.layout.metrics_csv)
                for part in parts:
                    os.remove(part)

    # -- recording -------------------------------------------------------------------------------
    def default_context(self) -> dict[str, str]:
        context = {
            "model": self.settings.model.label,
            "device": self.settings.resolved_device(),
            "dtype": str(self.settings.resolved_dtype()).removeprefix("torch."),
            "quant": "none",
            "attention": "sdpa",
            "backend": "hf",
        }
        loaded = self._models.get(self._key())
        if loaded is not None:  # the model under test ran another attention, or has no tokenizer: say so
            context["attention"] = loaded.options.attn_implementation
            context.update({f"{k}_note": v for k, v in loaded.notes.items()})
        return context

    def recorder(self, nodeid: str) -> MetricRecorder:
        rec = MetricRecorder(nodeid=nodeid, sink=self.write_row, context=self.default_context(), run_id=self.run_id)
        self.recorders.append(rec)
        return rec

    # -- models ----------------------------------------------------------------------------------
    def _share_cpu(self) -> None:
        """Under xdist on CPU, give this worker its share of the cores (before the first model runs)."""
        share = cpu_thread_share(getattr(self.config, "workerinput", None))
        if share is not None:
            import torch

            torch.set_num_threads(share)

    def model(
        self,
        spec: ModelSpec | str | None = None,
        *,
        dtype: Any = None,
        device: str | None = None,
        attn_implementation: str = "sdpa",
        seed: int = 0,
    ) -> Any:
        """A LoadedModel, loaded once per run for each (spec, device, dtype, attention, seed)."""
        spec = self.settings.model if spec is None else spec
        spec = parse_model(spec) if isinstance(spec, str) else spec
        key = self._key(spec, dtype=dtype, device=device, attn_implementation=attn_implementation, seed=seed)
        if not self._models and key[1] == "cpu":
            self._share_cpu()
        if key not in self._models:
            self._models[key] = load_model(spec, LoadOptions(*key[1:]))
        return self._models[key]

    def _key(
        self,
        spec: ModelSpec | None = None,
        *,
        dtype: Any = None,
        device: str | None = None,
        attn_implementation: str = "sdpa",
        seed: int = 0,
    ) -> tuple:
        """(spec, device, dtype, attention, seed, borrowed tokenizer): the model cache's key. The
        --attnlab-tokenizer is borrowed for the model under test only."""
        spec = spec or self.settings.model
        tokenizer = self.settings.tokenizer if spec == self.settings.model else None
        device = device or self.settings.resolved_device()
        return (spec, device, dtype or self.settings.resolved_dtype(), attn_implementation, seed, tokenizer)

    def candidate(self) -> Any:
        """The --attnlab-candidate checkpoint, loaded like the model under test (see models.candidate)."""
        if self.settings.candidate is None:
            raise ValueError("no --attnlab-candidate was given")
        key = ("candidate", *self._key(self.settings.candidate)[1:])
        if key not in self._models:
            self._models[key] = load_candidate(self.settings.candidate, LoadOptions(*key[1:]), self.model())
        return self._models[key]


#: config.stash keys shared by the sub-plugins: the run's session, and each test's MetricRecorder (item.stash)
SESSION_KEY = pytest.StashKey[AttnlabSession]()
RECORDER_KEY = pytest.StashKey[MetricRecorder]()
