"""Named registries: the one extension mechanism (models, quantizers, attention, decode paths, monitors,
exporters), each filled from a conftest.py through the registration hooks that `register_all` fires."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import pytest

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the valid choices."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}; choose from: {', '.join(choices) or '(none registered)'}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class Registry(Generic[T]):
    """An ordered name -> object map that refuses duplicates and names the choices on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        if not replace and name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override)")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return list(self._items)

    def select(self, spec: str) -> list[str]:
        """Expand a comma list (or ``all``) into registered names, in the order given."""
        if spec.strip() == "all":
            return self.names()
        names = [n.strip() for n in spec.split(",") if n.strip()]
        for name in names:
            self.get(name)
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


#: The baseline of each technique axis: the full-precision model, dense SDPA attention.
BASELINE_QUANT, BASELINE_ATTENTION = "none", "sdpa"

#: Every extendable registry, by the keyword the registration hooks pass it under: "module:attribute".
REGISTRIES = {
    "random_configs": "pytest_attnlab.models.random_models:RANDOM_CONFIGS",
    "model_sources": "pytest_attnlab.models.loader:MODEL_SOURCES",
    "quantizers": "pytest_attnlab.quant:QUANTIZERS",
    "attention": "pytest_attnlab.attention:ATTENTION",
    "decode_paths": "pytest_attnlab.paths:DECODE_PATHS",
    "monitors": "pytest_attnlab.perf.monitors:MONITORS",
    "exporters": "pytest_attnlab.quant.export:EXPORT_FORMATS",
    "mutants": "pytest_attnlab.quant.mutants:MUTANTS",
    "report_writers": "pytest_attnlab.reports.plugin:REPORT_WRITERS",
    "decode_mutants": "pytest_attnlab.selftest.decode_mutants:DECODE_MUTANTS",
    "checkpoint_readers": "pytest_attnlab.models.dequantize:READERS",
    "attention_layouts": "pytest_attnlab.models.anatomy:ATTENTION_LAYOUTS",
    "mlp_layouts": "pytest_attnlab.models.anatomy:MLP_LAYOUTS",
    "norm_kinds": "pytest_attnlab.formulas:NORM_KINDS",
    "activations": "pytest_attnlab.formulas:ACTIVATIONS",
    "linear_feature_maps": "pytest_attnlab.attention.variants.linear:FEATURE_MAPS",
    "linear_forms": "pytest_attnlab.attention.variants.linear:FORMS",
    "gemv_formats": "pytest_attnlab.paths.fast_weights:GEMV_FORMATS",
    "vllm_quant": "pytest_attnlab.paths.vllm_quant:VLLM_QUANT",
}


def load(where: str) -> Any:
    """The object a "module:attribute" string names (the module imported on first use)."""
    import importlib

    module, _, attribute = where.partition(":")
    return getattr(importlib.import_module(module), attribute)


_KEY = pytest.StashKey[dict[str, Registry[Any]]]()


def register_all(config: pytest.Config) -> dict[str, Registry[Any]]:
    """Fire every registration hook, once per run, before anything checks a name (imports torch)."""
    if _KEY not in config.stash:
        regs = {key: load(where) for key, where in REGISTRIES.items()}
        hook = config.hook
        hook.pytest_attnlab_register_models.call_historic(
            kwargs={"random_configs": regs["random_configs"], "model_sources": regs["model_sources"]}
        )
        hook.pytest_attnlab_register_quantizers.call_historic(kwargs={"quantizers": regs["quantizers"]})
        hook.pytest_attnlab_register_attention.call_historic(kwargs={"registry": regs["attention"]})
        hook.pytest_attnlab_register.call_historic(kwargs={"registries": regs, "config": config})
        config.stash[_KEY] = regs
    return config.stash[_KEY]
