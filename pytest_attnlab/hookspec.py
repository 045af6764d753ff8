"""Hooks that pytest-attnlab calls; implement them in a conftest.py or a plugin."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(historic=True)
def pytest_attnlab_register_models(random_configs: Any, model_sources: Any) -> None:
    """Register extra random model shapes or model sources before `--attnlab-model` is checked.

    Example ``conftest.py``::

        def pytest_attnlab_register_models(random_configs, model_sources):
            random_configs.register("qwen2-wide", lambda: {**TINY_QWEN2, "hidden_size": 128})
    """


@pytest.hookspec
def pytest_attnlab_options() -> Any:
    """Hand in a list of `pytest_attnlab.options.OptionSpec`: each area does (the core, experiments, paths,
    quant, attention, perf, reports), and a plugin may too. `options.selection` resolves all of them, once,
    into one dict (option name -> value) that every area reads. In a plugin module,
    `pytest_addoption, pytest_attnlab_options = options.area_hooks(SPECS)` declares the flags and hands them in.
    """


@pytest.hookspec
def pytest_attnlab_metric_recorded(row: Any) -> None:
    """Called with every MetricRow right after it is written to metrics.csv.

    Example ``conftest.py`` that mirrors TPOT rows to stdout::

        def pytest_attnlab_metric_recorded(row):
            if row.metric == "tpot":
                print(row.nodeid, row.value, row.unit)
    """


@pytest.hookspec(historic=True)
def pytest_attnlab_register_attention(registry: Any) -> None:
    """Register extra attention variants (the `--attnlab-attn` choices) before options are checked.

    Example ``conftest.py``::

        from pytest_attnlab.attention import sliding_window

        def pytest_attnlab_register_attention(registry):
            v = sliding_window(512, sinks=4)
            registry.register(v.name, v)
    """


@pytest.hookspec(historic=True)
def pytest_attnlab_register_quantizers(quantizers: Any) -> None:
    """Register extra quantizers (`pytest_attnlab.quant.QUANTIZERS`, a Registry) before options are checked.

    Example ``conftest.py``::

        from pytest_attnlab.quant import Quantizer

        class HalfPrecision(Quantizer):
            name, bits = "fp16-cast", 16

            def settings(self):
                return {"dtype": "float16"}

            def quantize(self, loaded, ctx):
                import copy
                return copy.deepcopy(loaded.model).half().float()

        def pytest_attnlab_register_quantizers(quantizers):
            quantizers.register("fp16-cast", HalfPrecision(), replace=True)
    """


@pytest.hookspec(historic=True)
def pytest_attnlab_register(registries: Any, config: Any) -> None:
    """Register into any registry before any option or `--attnlab-config` name is checked.

    `registries` maps a key to its Registry: random_configs, model_sources, quantizers, attention,
    decode_paths, monitors, exporters, report_writers, mutants, decode_mutants, checkpoint_readers,
    attention_layouts, mlp_layouts, norm_kinds, activations, linear_feature_maps, linear_forms, gemv_formats,
    vllm_quant: every Registry in the package (`pytest_attnlab.registry.REGISTRIES`).
    Example ``conftest.py``::

        def pytest_attnlab_register(registries, config):
            registries["monitors"].register("mine", lambda device: MyMonitor(device))
            registries["decode_paths"].register("mine", MyPath, replace=True)
    """
