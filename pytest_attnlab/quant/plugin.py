"""pytest hooks, options and fixtures of pytest_attnlab.quant (loaded by pytest_attnlab.plugin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_attnlab.options import SELECTION_KEY, OptionSpec, area_hooks, parse_choice, parse_names, selection
from pytest_attnlab.quant import QuantizerUnavailable, quantize
from pytest_attnlab.registry import BASELINE_QUANT


@dataclass(frozen=True)
class QuantSettings:
    """The resolved --attnlab-quant* options."""

    names: list[str]
    thresholds: dict[str, float] = field(default_factory=dict)
    cache: str = "on"
    default_threshold: float = 0.95
    _rebuilt: set[tuple] = field(default_factory=set, repr=False, compare=False)  # (id(loaded), name) rebuilt

    def gate(self, name: str, quantizer: Any = None) -> float:
        """The logits-cosine gate for `name`: --attnlab-quant-threshold, else the method's own, else
        the run's --attnlab-logits-cosine."""
        if name in self.thresholds:
            return self.thresholds[name]
        own = getattr(quantizer, "min_cosine", None)
        return own if own is not None else self.default_threshold

    def quantize(self, loaded: Any, name: str) -> Any:
        """`loaded` quantized by `name` under --attnlab-quant-cache (off: quantize anew and store nothing;
        rebuild: the stored copy is dropped once per model and quantizer in the run): the one place every
        area quantizes a case (quantized_model, the perf grid, the backends). A method that cannot run here
        skips the test with the reason (the pip extra to install)."""
        from pytest_attnlab.quant import QUANTIZERS  # torch: only once a test uses it
        from pytest_attnlab.quant.cache import invalidate_for  # torch: only once a test uses it

        if self.cache == "rebuild" and (id(loaded), name) not in self._rebuilt and name != BASELINE_QUANT:
            invalidate_for(loaded, name, QUANTIZERS.get(name).settings())
            self._rebuilt.add((id(loaded), name))
        try:
            return quantize(loaded, name, cache=self.cache != "off")
        except QuantizerUnavailable as exc:
            pytest.skip(str(exc))


QUANT_KEY = pytest.StashKey[QuantSettings]()
parse_quant = parse_names("--attnlab-quant", "quantizers", BASELINE_QUANT, lead=(BASELINE_QUANT, "all"))


def parse_thresholds(value: str) -> dict[str, float]:
    out: dict[str, float] = {}
    items = [p.strip() for p in value.split(",") if p.strip()]
    if items:
        from pytest_attnlab.quant import QUANTIZERS  # torch: only for a value given
    for item in items:
        name, sep, cos = item.partition("=")
        name = name.strip()
        if not sep or name not in QUANTIZERS:
            raise pytest.UsageError(
                f"--attnlab-quant-threshold: {item!r} is not NAME=COSINE with NAME one of: "
                f"{', '.join(QUANTIZERS.names())}"
            )
        try:
            out[name] = float(cos)
        except ValueError:
            raise pytest.UsageError(f"--attnlab-quant-threshold: {cos!r} (for {name}) is not a number") from None
    return out


OPTIONS = [
    OptionSpec(
        "quant",
        BASELINE_QUANT,
        parse_quant,
        "NAMES",
        "quantizers to test: a comma list of registered names, 'all', or 'none' (the full-precision baseline only).",
    ),
    OptionSpec(
        "quant-threshold",
        "",
        parse_thresholds,
        "NAME=COS,...",
        "per-method logits-cosine gates, e.g. rtn-int4-g32=0.97 (others use --attnlab-logits-cosine).",
    ),
    OptionSpec(
        "quant-cache",
        "on",
        lambda v: parse_choice("--attnlab-quant-cache", ("on", "off", "rebuild"), "mode")(v.lower()),
        "MODE",
        "quantized-checkpoint cache: on (reuse), off (quantize anew, store nothing) or rebuild "
        "(quantize anew and overwrite).",
    ),
]


pytest_addoption, pytest_attnlab_options = area_hooks(OPTIONS)  # its marker, quant(*names): plugin.MARKERS


def settings_of(config: pytest.Config) -> QuantSettings:
    """The resolved quant options (the registration hooks run first; imports torch on first call)."""
    if QUANT_KEY not in config.stash:
        values = selection(config)
        config.stash[QUANT_KEY] = QuantSettings(
            names=list(values["quant"]),
            thresholds=values["quant-threshold"],
            cache=values["quant-cache"],
            default_threshold=values["logits-cosine"],
        )
    return config.stash[QUANT_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if SELECTION_KEY not in config.stash:  # resolved when the run names an option
        return []
    s = settings_of(config)
    return [f"attnlab quant: {', '.join(s.names)} (cache {s.cache})"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "quantizer" in metafunc.fixturenames:
        names = settings_of(metafunc.config).names
        marker = metafunc.definition.get_closest_marker("quant")
        if marker is not None:
            names = [n for arg in marker.args for n in parse_quant(arg)]
        metafunc.parametrize("quantizer", names, ids=names)
    if "quant_attention" in metafunc.fixturenames:
        names = list(selection(metafunc.config)["attn"])
        metafunc.parametrize("quant_attention", names, ids=[f"attn={n}" for n in names])


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def quant_settings(pytestconfig: pytest.Config) -> QuantSettings:
    """The resolved --attnlab-quant, --attnlab-quant-threshold and --attnlab-quant-cache."""
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def quantize_model(quant_settings: QuantSettings) -> Any:
    """`quantize_model(loaded, name)` -> LoadedModel: `QuantSettings.quantize`, the run's cache mode with it;
    skips the test with the reason (the pip extra to install) when the method cannot run."""
    return quant_settings.quantize
