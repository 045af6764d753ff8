"""The attention sub-plugin's options, fixture parametrization and registration hook (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TEST_FILE = """
import pytest

def test_names(attention_patch):
    print("VARIANT", attention_patch.name, attention_patch.variant.kind)

@pytest.mark.attention("mqa,gqa_3")
def test_marked(attention_patch):
    pass
"""


def test_help_lists_attention_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--attnlab-attn=NAMES*", "*Default: 'sdpa'*", "*--attnlab-attn-seq=LENS*"])


def test_unknown_variant_is_a_usage_error_listing_choices(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attnlab-attn", "sdpa,nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-attn: unknown attention variant 'nope'; choose from: eager, sdpa*mqa*"])


def test_bad_seq_list_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--attnlab-attn-seq", "128,big")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-attn-seq: expected 'auto' or a comma list*"])


def test_default_parametrizes_sdpa_and_marker_overrides(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_names[[]sdpa[]]", "*test_marked[[]mqa[]]", "*test_marked[[]gqa_3[]]"])


def test_all_selects_every_registered_variant(pytester: pytest.Pytester) -> None:
    from pytest_attnlab.attention import ATTENTION

    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest("--collect-only", "-q", "--attnlab-attn", "all", "-k", "test_names")
    result.stdout.fnmatch_lines([f"*test_names[[]{name}[]]" for name in ATTENTION.names()])


def test_conftest_hook_registers_a_user_variant(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
from pytest_attnlab.attention import sliding_window

def pytest_attnlab_register_attention(registry):
    v = sliding_window(7, sinks=2)
    if v.name not in registry:
        registry.register(v.name, v)
"""
    )
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest("-s", "-q", "--attnlab-attn", "sliding_window_7_sink2", "-k", "test_names")
    result.stdout.fnmatch_lines(["*VARIANT sliding_window_7_sink2 kernel*"])
    assert result.ret == 0
