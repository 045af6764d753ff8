"""pytest_attnlab.paths: the DecodePath base class's capabilities and the run's one path cache."""

from __future__ import annotations

import pytest

from pytest_attnlab.paths import DECODE_PATHS, DecodePath, PathCache, PathOptions


class Echo(DecodePath):
    """A path with only the required methods: every capability is the base class's default."""

    name = "echo"

    def __init__(self, options: PathOptions | None = None) -> None:
        self.options = options

    def prepare(self, model, batch, prompt_len, new_tokens) -> None:
        pass

    def generate(self, ids, new_tokens, on_token):
        return ids


def test_capabilities_default_to_not_supported():
    path = Echo()
    assert path.weights_read(None, 1) is None  # the roofline keeps the HF model's parameter bytes
    assert path.describe() == {}  # nothing added to the metrics context
    with pytest.raises(pytest.skip.Exception, match="backend 'echo' has no greedy_logprobs"):
        path.greedy_logprobs(None, 4, 5)


def test_a_path_without_prepare_or_generate_cannot_be_built():
    class Half(DecodePath):
        name = "half"

        def prepare(self, model, batch, prompt_len, new_tokens) -> None:
            pass

    with pytest.raises(TypeError, match="generate"):
        Half()


def test_the_cache_builds_each_path_once_from_its_options(monkeypatch):
    monkeypatch.setitem(DECODE_PATHS._items, "echo", Echo)
    monkeypatch.setitem(DECODE_PATHS._items, "bare", lambda options: object())
    options = PathOptions(compile="default")
    cache = PathCache(options)
    assert cache("echo") is cache("echo") and cache("echo").options is options
    with pytest.raises(TypeError, match="decode path 'bare': object does not subclass paths.DecodePath"):
        cache("bare")


def test_perf_and_backends_share_one_cache_built_from_the_perf_options(pytester):
    """The backends' cache used PathOptions() before: --attnlab-perf-compile never reached backend_path."""
    pytester.makepyfile(
        """
        from pytest_attnlab.perf.plugin import PERF_STATE_KEY

        def test_shared(request, backend_state):
            fast = backend_state.path("fast")
            assert fast is request.config.stash[PERF_STATE_KEY].path("fast")
            assert (fast.options.compile, fast.options.weights) == ("default", "separate")
            vllm = backend_state.path("vllm")
            assert vllm.engines is backend_state.engines and vllm.export_format == "gptq"
        """
    )
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--attnlab-report-dir",
        "out",
        "--attnlab-perf-compile",
        "default",
        "--attnlab-perf-fast-weights",
        "separate",
        "--attnlab-vllm-quant-format",
        "gptq",
    )
    result.assert_outcomes(passed=1)
