"""Experiment configs from YAML (seed 003): techniques x batch levels x generation parameters.

Dataclass configs validated in ``__post_init__`` (optimum-benchmark style): every error names the
file, the field, the bad value and the allowed values, so a reader can fix the file without the code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_attnlab.metrics import tolerance
from pytest_attnlab.registry import BASELINE_ATTENTION, BASELINE_QUANT

BATCH_LEVELS = ("small", "medium", "large")
#: Batch sizes per level; a config may override any of them under `batch_sizes:`.
DEFAULT_BATCH_SIZES: dict[str, tuple[int, ...]] = {"small": (1,), "medium": (4,), "large": (16,)}


class ExperimentConfigError(ValueError):
    """A bad experiment file: the message names the field and what is allowed."""


def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ExperimentConfigError(f"field {field_name!r}: invalid value {value!r}; allowed: {allowed}")


def _unknown(field_name: str, allowed: set[str]) -> None:
    import difflib

    key = field_name.rsplit(".", 1)[-1]
    choices = sorted(allowed)
    near = [a for a in choices if a.startswith(key)] or difflib.get_close_matches(key, choices, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    names = ", ".join(sorted(allowed))
    raise ExperimentConfigError(f"unknown field {field_name!r}{hint}; allowed fields: {names}")


def _names(field_name: str, value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        _fail(field_name, value, "a non-empty list of names (or a comma-separated string)")
    return tuple(value)


@dataclass(frozen=True)
class Techniques:
    """What to compare: quantizer, attention-variant and backend names (registry names, test ids)."""

    quantizers: tuple[str, ...] = (BASELINE_QUANT,)
    attention: tuple[str, ...] = (BASELINE_ATTENTION,)
    backends: tuple[str, ...] = ("hf",)

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _names(f"techniques.{f.name}", getattr(self, f.name), f.default))


@dataclass(frozen=True)
class Generation:
    max_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    num_prompts: int = 4
    prompts_file: str | None = None  # one prompt per line, or a JSON list; relative to the YAML file

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            _fail("generation.max_tokens", self.max_tokens, "an integer >= 1")
        if not isinstance(self.num_prompts, int) or isinstance(self.num_prompts, bool) or self.num_prompts < 1:
            _fail("generation.num_prompts", self.num_prompts, "an integer >= 1")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            _fail("generation.top_k", self.top_k, "an integer >= 0 (0 = off)")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool) or self.temperature < 0:
            _fail("generation.temperature", self.temperature, "a number >= 0 (0 = greedy)")
        if not isinstance(self.top_p, (int, float)) or isinstance(self.top_p, bool) or not 0 < self.top_p <= 1:
            _fail("generation.top_p", self.top_p, "a number in (0, 1]")
        if self.prompts_file is not None and not isinstance(self.prompts_file, str):
            _fail("generation.prompts_file", self.prompts_file, "a path (string) or null")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment file, parsed and validated. Expand it with `cases()`."""

    experiment_name: str = "default"
    model: str | None = None  # None: --attnlab-model
    techniques: Techniques = field(default_factory=Techniques)
    batch_levels: tuple[str, ...] = ("small",)
    batch_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_BATCH_SIZES))
    generation: Generation = field(default_factory=Generation)
    warmup_iterations: int = 1
    test_iterations: int = 3
    suites: tuple[str, ...] = ()  # test paths (from the rootdir) run when the command line names none
    options: Mapping[str, Any] = field(default_factory=dict)  # more --attnlab-NAME values, by NAME
    #: regression tolerances by metric name ({tpot: "+10%"}), as @pytest.mark.attnlab_gate gives a test
    gate: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None  # the file it came from

    def __post_init__(self) -> None:
        if not isinstance(self.experiment_name, str) or not self.experiment_name.strip():
            _fail("experiment_name", self.experiment_name, "a non-empty string")
        if self.model is not None and not isinstance(self.model, str):
            _fail("model", self.model, "a model spec string (embedded, random:NAME, a folder or a hub id)")
        levels = _names("batch_levels", self.batch_levels, ("small",))
        for level in levels:
            if level not in BATCH_LEVELS:
                _fail("batch_levels", level, ", ".join(BATCH_LEVELS))
        object.__setattr__(self, "batch_levels", levels)
        object.__setattr__(self, "suites", _names("suites", self.suites or None, ()))
        if not isinstance(self.options, Mapping) or not all(
            isinstance(v, (str, int, float)) for v in self.options.values()
        ):
            _fail("options", self.options, "a mapping of option names (perf-monitor) to values")
        sizes = dict(DEFAULT_BATCH_SIZES)
        if not isinstance(self.batch_sizes, Mapping):
            _fail("batch_sizes", self.batch_sizes, f"a mapping with keys {', '.join(BATCH_LEVELS)}")
        for level, value in self.batch_sizes.items():
            if level not in BATCH_LEVELS:
                _fail(f"batch_sizes.{level}", level, ", ".join(BATCH_LEVELS))
            value = (value,) if isinstance(value, int) else value
            if (
                not isinstance(value, (list, tuple))
                or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
            ):
                _fail(f"batch_sizes.{level}", value, "a positive integer or a list of them")
            sizes[level] = tuple(value)
        object.__setattr__(self, "batch_sizes", sizes)
        if not isinstance(self.gate, Mapping):
            _fail("gate", self.gate, "a mapping of metric names to tolerances, e.g. {tpot: '+10%'}")
        try:
            object.__setattr__(self, "gate", tolerance.parse(self.gate, "field 'gate'"))
        except ValueError as exc:
            raise ExperimentConfigError(str(exc)) from None
        for name in ("warmup_iterations", "test_iterations"):
            value = getattr(self, name)
            low = 0 if name == "warmup_iterations" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                _fail(name, value, f"an integer >= {low}")

    def planned_options(self) -> dict[str, str]:
        """The `--attnlab-*` values this experiment stands for; the command line still beats them."""
        t = self.techniques
        plan = {"quant": ",".join(t.quantizers), "attn": ",".join(t.attention), "backend": ",".join(t.backends)}
        return {**plan, **({"model": self.model} if self.model else {}), **{k: str(v) for k, v in self.options.items()}}

    # -- expansion --------------------------------------------------------------------------------
    def cases(self) -> list[ExperimentCase]:
        """The cross product quantizer x attention x backend x batch size, in file order."""
        t = self.techniques
        sizes = [(lvl, bs) for lvl in self.batch_levels for bs in self.batch_sizes[lvl]]
        return [
            ExperimentCase(self, q, a, b, lvl, bs)
            for q, a, b, (lvl, bs) in itertools.product(t.quantizers, t.attention, t.backends, sizes)
        ]

    def prompts(self) -> list[str] | None:
        """Prompts from `generation.prompts_file` (None: use the embedded prompt set)."""
        path = self.generation.prompts_file
        if path is None:
            return None
        return read_prompts(resolve_relative(path, self.source))[: self.generation.num_prompts]

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["batch_sizes"] = {k: list(v) for k, v in self.batch_sizes.items()}
        return d


@dataclass(frozen=True)
class ExperimentCase:
    """One parameter set of an experiment: what the `attnlab_case` fixture hands a test."""

    experiment: ExperimentConfig
    quant: str
    attention: str
    backend: str
    batch_level: str
    batch_size: int

    @property
    def id(self) -> str:
        return f"{self.quant}-{self.attention}-{self.backend}-bs{self.batch_size}"

    @property
    def generation(self) -> Generation:
        return self.experiment.generation

    def context(self) -> dict[str, Any]:
        """Context for `metrics.update_context(**case.context())`: CSV columns plus extra keys."""
        return {
            "quant": self.quant,
            "attention": self.attention,
            "backend": self.backend,
            "batch": self.batch_size,
            "batch_level": self.batch_level,
            "experiment": self.experiment.experiment_name,
        }


def resolve_relative(path: str, source: str | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and source:
        p = Path(source).parent / p
    return p


def read_prompts(path: Path) -> list[str]:
    import json

    if not path.is_file():
        raise ExperimentConfigError(f"field 'generation.prompts_file': no such file {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return [p if isinstance(p, str) else p.get("text", "") for p in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


_SECTIONS: dict[str, Any] = {"techniques": Techniques, "generation": Generation}
_TOP_FIELDS = {f.name for f in fields(ExperimentConfig)} - {"source"}


def _section(name: str, cls: Any, value: Any) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        _fail(name, value, "a mapping")
    allowed = {f.name for f in fields(cls)}
    for key in value:
        if key not in allowed:
            _unknown(f"{name}.{key}", allowed)
    return cls(**value)


def from_mapping(data: Any, source: str | None = None) -> ExperimentConfig:
    """Build a config from parsed YAML; unknown keys are errors that list the known ones."""
    if not isinstance(data, Mapping):
        raise ExperimentConfigError(f"the top level must be a mapping of fields, got {type(data).__name__}")
    data = dict(data)
    # seed-003 spelling: a single `batch_level:` and flat generation keys are accepted too.
    if "batch_level" in data:
        data.setdefault("batch_levels", data.pop("batch_level"))
    flat_gen = {k: data.pop(k) for k in [f.name for f in fields(Generation)] if k in data}
    if flat_gen:
        data["generation"] = {**flat_gen, **(data.get("generation") or {})}
    for key in data:
        if key not in _TOP_FIELDS:
            _unknown(key, _TOP_FIELDS | {"batch_level", *(f.name for f in fields(Generation))})
    for name, cls in _SECTIONS.items():
        data[name] = _section(name, cls, data.get(name))
    return ExperimentConfig(**data, source=source)


def load(path: str | Path) -> ExperimentConfig:
    """Parse and validate an experiment YAML file; errors are prefixed with the file name."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ExperimentConfigError(f"{path}: no such experiment file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return from_mapping(data, source=str(path))
    except yaml.YAMLError as exc:
        raise ExperimentConfigError(f"{path}: not valid YAML: {exc}") from None
    except (ExperimentConfigError, TypeError) as exc:
        raise ExperimentConfigError(f"{path}: {exc}") from None


def check_names(config: ExperimentConfig, choices: Mapping[str, list[str]]) -> None:
    """Check technique names against the registries (`{"quantizers": [...], "attention": [...]}`)."""
    for field_name, allowed in choices.items():
        for name in getattr(config.techniques, field_name):
            if name not in allowed:
                raise ExperimentConfigError(
                    f"{config.source or '<config>'}: field 'techniques.{field_name}': unknown name {name!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
