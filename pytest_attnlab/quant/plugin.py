"""pytest hooks, options and fixtures of pytest_attnlab.quant (loaded by pytest_attnlab.plugin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

BASELINE = "none"
CACHE_CHOICES = ("on", "off", "rebuild")


@dataclass(frozen=True)
class QuantSettings:
    """The resolved --attnlab-quant* options."""

    names: list[str]
    thresholds: dict[str, float] = field(default_factory=dict)
    cache: str = "on"
    default_threshold: float = 0.95

    def gate(self, name: str, quantizer: Any = None) -> float:
        """The logits-cosine gate for `name`: --attnlab-quant-threshold, else the method's own, else
        the run's --attnlab-logits-cosine."""
        if name in self.thresholds:
            return self.thresholds[name]
        own = getattr(quantizer, "min_cosine", None)
        return own if own is not None else self.default_threshold


QUANT_KEY = pytest.StashKey[QuantSettings]()

_OPTIONS = [
    (
        "quant",
        "NAMES",
        BASELINE,
        "quantizers to test: a comma list of registered names, 'all', or 'none' (the full-precision "
        "baseline only). Ini key: attnlab_quant.",
    ),
    (
        "quant-threshold",
        "NAME=COS,...",
        "",
        "per-method logits-cosine gates, e.g. rtn-int4-g32=0.97 (others use --attnlab-logits-cosine). "
        "Ini key: attnlab_quant_threshold.",
    ),
    (
        "quant-cache",
        "MODE",
        "on",
        "quantized-checkpoint cache: on (reuse), off (quantize anew, store nothing) or rebuild "
        "(quantize anew and overwrite). Ini key: attnlab_quant_cache.",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnlab")
    for name, metavar, default, help_ in _OPTIONS:
        dest = "attnlab_" + name.replace("-", "_")
        group.addoption(
            f"--attnlab-{name}",
            dest=dest,
            metavar=metavar,
            default=None,
            help=f"{help_} Default: {default!r}",
        )
        parser.addini(dest, help=help_, default=None)


def _value(config: pytest.Config, name: str, default: str) -> str:
    dest = "attnlab_" + name.replace("-", "_")
    value = config.getoption(dest, default=None)
    if value is None:
        value = config.getini(dest) or None
    return default if value is None else str(value)


def parse_quant(value: str, registry: Any) -> list[str]:
    """'none' | 'all' | 'a,b' -> names; an unknown name is a UsageError listing the registered ones."""
    from pytest_attnlab.registry import UnknownNameError

    value = value.strip()
    if value in ("", BASELINE):
        return [BASELINE]
    if value == "all":
        return registry.names()
    names = [n.strip() for n in value.split(",") if n.strip()]
    try:
        for name in names:
            if name != BASELINE:
                registry.get(name)
    except UnknownNameError as exc:
        raise pytest.UsageError(
            f"--attnlab-quant: unknown quantizer {exc.name!r}; choose from: none, all, {', '.join(exc.choices)}"
        ) from None
    return names


def parse_thresholds(value: str, registry: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        name, sep, cos = item.partition("=")
        name = name.strip()
        if not sep or name not in registry:
            raise pytest.UsageError(
                f"--attnlab-quant-threshold: {item!r} is not NAME=COSINE with NAME one of: "
                f"{', '.join(registry.names())}"
            )
        try:
            out[name] = float(cos)
        except ValueError:
            raise pytest.UsageError(f"--attnlab-quant-threshold: {cos!r} (for {name}) is not a number") from None
    return out


def parse_cache(value: str) -> str:
    value = value.strip().lower()
    if value not in CACHE_CHOICES:
        raise pytest.UsageError(
            f"--attnlab-quant-cache: invalid mode {value!r}; choose from: {', '.join(CACHE_CHOICES)}"
        )
    return value


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "quant(*names): run `quantizer` with these quantizers instead of --attnlab-quant"
    )
    from pytest_attnlab.session import explicitly_used

    if explicitly_used(config):  # a bad name is a UsageError now; else on first use (no torch import)
        settings_of(config)


def settings_of(config: pytest.Config) -> QuantSettings:
    """The resolved quant options, after the registration hook ran (imports torch on first call)."""
    if QUANT_KEY not in config.stash:
        from pytest_attnlab.options import OPTIONS, resolve
        from pytest_attnlab.quant import QUANTIZERS

        config.hook.pytest_attnlab_register_quantizers.call_historic(kwargs={"quantizers": QUANTIZERS})
        cosine_opt = next(o for o in OPTIONS if o.name == "logits-cosine")
        config.stash[QUANT_KEY] = QuantSettings(
            names=parse_quant(_value(config, "quant", BASELINE), QUANTIZERS),
            thresholds=parse_thresholds(_value(config, "quant-threshold", ""), QUANTIZERS),
            cache=parse_cache(_value(config, "quant-cache", "on")),
            default_threshold=resolve(config, cosine_opt),
        )
    return config.stash[QUANT_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash.get(QUANT_KEY, None)
    return [f"attnlab quant: {', '.join(s.names)} (cache {s.cache})"] if s else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "quantizer" in metafunc.fixturenames:
        names = settings_of(metafunc.config).names
        marker = metafunc.definition.get_closest_marker("quant")
        if marker is not None:
            from pytest_attnlab.quant import QUANTIZERS

            names = [n for arg in marker.args for n in parse_quant(arg, QUANTIZERS)]
        metafunc.parametrize("quantizer", names, ids=names)
    if "quant_attention" in metafunc.fixturenames:
        names = attention_names(metafunc.config)
        metafunc.parametrize("quant_attention", names, ids=[f"attn={n}" for n in names])


def attention_names(config: pytest.Config) -> list[str]:
    """--attnlab-attn's selection when the attention area is installed, else just sdpa."""
    try:
        from pytest_attnlab.attention.plugin import selected_names
    except ImportError:
        return ["sdpa"]
    return selected_names(config)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def quant_settings(pytestconfig: pytest.Config) -> QuantSettings:
    """The resolved --attnlab-quant, --attnlab-quant-threshold and --attnlab-quant-cache."""
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def quantize_model(quant_settings: QuantSettings) -> Any:
    """`quantize_model(loaded, name)` -> LoadedModel: `pytest_attnlab.quant.quantize` with the run's
    cache mode; skips the test with the reason (the pip extra to install) when the method cannot run."""
    from pytest_attnlab.quant import QuantizerUnavailable, quantize
    from pytest_attnlab.quant.cache import invalidate_for

    rebuilt: set[tuple] = set()

    def run(loaded: Any, name: str) -> Any:
        if quant_settings.cache == "rebuild" and (id(loaded), name) not in rebuilt:
            invalidate_for(loaded, name)
            rebuilt.add((id(loaded), name))
        try:
            return quantize(loaded, name, cache=quant_settings.cache != "off")
        except QuantizerUnavailable as exc:
            pytest.skip(str(exc))

    return run


@pytest.fixture
def quantized_model(request: pytest.FixtureRequest, attnlab_model: Any, quantize_model: Any) -> Any:
    """The model under test quantized by `quantizer` (the baseline itself for 'none').

    Sets the CSV `quant` column of this test's `metrics` rows to the quantizer's name.
    """
    name = request.getfixturevalue("quantizer") if "quantizer" in request.fixturenames else BASELINE
    if "metrics" in request.fixturenames:
        request.getfixturevalue("metrics").update_context(quant=name)
    return quantize_model(attnlab_model, name)
