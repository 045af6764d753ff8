"""pytest hooks, options and fixtures of pytest_attnlab.attention (loaded by pytest_attnlab.plugin).

Torch and transformers load only when a test uses `attention_patch` or the option names variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

OPTION, INI, DEFAULT = "--attnlab-attn", "attnlab_attn", "sdpa"
NAMES_KEY = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnlab")
    help_ = (
        "attention variants for tests using the attention_patch fixture: a comma list of registered "
        "names or 'all' (e.g. sdpa,sliding_window_64,mqa). Ini key: attnlab_attn."
    )
    group.addoption(OPTION, dest="attnlab_attn", metavar="NAMES", default=None, help=f"{help_} Default: {DEFAULT!r}")
    parser.addini(INI, help=help_, default=None)
    group.addoption(
        "--attnlab-attn-seq",
        dest="attnlab_attn_seq",
        metavar="LENS",
        default=None,
        help="sequence lengths of suites/perf/test_attention_modules.py: a comma list, or 'auto' "
        "(128,256 on CPU; 128,256,512,1024 on CUDA). Ini key: attnlab_attn_seq. Default: 'auto'",
    )
    parser.addini("attnlab_attn_seq", help="sequence lengths of the attention module benchmarks", default=None)


def parse_attn(value: str, registry: Any) -> list[str]:
    """Expand the option value; unknown names raise pytest.UsageError listing the registered ones."""
    from pytest_attnlab.registry import UnknownNameError

    try:
        names = registry.select(value)
    except UnknownNameError as exc:
        raise pytest.UsageError(f"{OPTION}: {exc}") from None
    if not names:
        raise pytest.UsageError(f"{OPTION}: no variant named; choose from: all, {', '.join(registry.names())}")
    return names


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "attention(*names): run attention_patch with these variants instead of --attnlab-attn",
    )
    _parse_seqs(_seq_value(config))
    value = config.getoption("attnlab_attn", default=None) or config.getini(INI)
    if value:  # named explicitly: check now (a UsageError before collection); else on first use
        selected_names(config)


def selected_names(config: pytest.Config) -> list[str]:
    """The --attnlab-attn selection, after the registration hook ran (imports torch on first call)."""
    if NAMES_KEY not in config.stash:
        from pytest_attnlab.attention import ATTENTION

        config.hook.pytest_attnlab_register_attention.call_historic(kwargs={"registry": ATTENTION})
        value = config.getoption("attnlab_attn", default=None) or config.getini(INI) or DEFAULT
        config.stash[NAMES_KEY] = parse_attn(str(value), ATTENTION)
    return config.stash[NAMES_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attention_seq_len" in metafunc.fixturenames:
        seqs = _parse_seqs(_seq_value(metafunc.config))
        if seqs is None:
            from pytest_attnlab.session import SESSION_KEY

            device = metafunc.config.stash[SESSION_KEY].settings.resolved_device()
            seqs = [128, 256] if device == "cpu" else [128, 256, 512, 1024]
        metafunc.parametrize("attention_seq_len", seqs, ids=[f"seq{n}" for n in seqs])
    if "attention_patch" not in metafunc.fixturenames:
        return
    names = selected_names(metafunc.config)
    marker = metafunc.definition.get_closest_marker("attention")
    if marker is not None:
        from pytest_attnlab.attention import ATTENTION

        names = [n for arg in marker.args for n in parse_attn(arg, ATTENTION)]
    metafunc.parametrize("attention_patch", names, indirect=True, ids=names)


@dataclass
class AttentionPatch:
    """What `attention_patch` gives a test: the variant and `apply(model)` (skips if it cannot run)."""

    name: str
    variant: Any

    @contextmanager
    def apply(self, model: Any) -> Iterator[Any]:
        from pytest_attnlab.attention import applied

        module = model if hasattr(model, "forward") else model.model
        reason = self.variant.unavailable(module)
        if reason:
            pytest.skip(reason)
        with applied(module, self.variant) as result:
            yield result


@pytest.fixture
def attention_patch(request: pytest.FixtureRequest) -> AttentionPatch:
    """One attention variant per test (parametrized from --attnlab-attn or `@pytest.mark.attention`).

    `with attention_patch.apply(model) as a:` runs the block with the variant swapped in; the CSV
    `attention` column of this test's `metrics` rows is set to the variant name.
    """
    from pytest_attnlab.attention import ATTENTION

    name = getattr(request, "param", None) or selected_names(request.config)[0]
    if "metrics" in request.fixturenames:
        request.getfixturevalue("metrics").update_context(attention=name)
    return AttentionPatch(name, ATTENTION.get(name))


@pytest.fixture(scope="session")
def attention_sample(attnlab_model: Any) -> Any:
    """(ids [1, 512] of the embedded prose sample on the model's device, dense reference capture);
    512 synthetic ids when the model has no tokenizer."""
    from pytest_attnlab import probe
    from pytest_attnlab.attention.evaluate import sample_ids
    from pytest_attnlab.prompts import synthetic_ids

    if attnlab_model.tokenizer is None:
        ids = synthetic_ids(attnlab_model.model.get_input_embeddings().num_embeddings, 512)
    else:
        ids = sample_ids(attnlab_model.tokenizer, 512)
    ids = ids.to(attnlab_model.device)
    return ids, probe.capture(attnlab_model.model, ids)


def _seq_value(config: pytest.Config) -> str:
    return config.getoption("attnlab_attn_seq", default=None) or config.getini("attnlab_attn_seq") or "auto"


def _parse_seqs(value: str) -> list[int] | None:
    if value.strip() == "auto":
        return None
    try:
        seqs = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        seqs = []
    if not seqs or min(seqs) < 1:
        raise pytest.UsageError(
            f"--attnlab-attn-seq: expected 'auto' or a comma list of positive integers, got {value!r}"
        )
    return seqs
