"""pytest hooks, options and fixtures of pytest_attnlab.attention (loaded by pytest_attnlab.plugin).

Torch and transformers load only when a test uses `attention_patch` or the option names variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_attnlab.options import OptionSpec, area_hooks, parse_names, selection
from pytest_attnlab.prompts import synthetic_ids
from pytest_attnlab.registry import BASELINE_ATTENTION
from pytest_attnlab.session import SESSION_KEY

parse_attn = parse_names("--attnlab-attn", "attention", BASELINE_ATTENTION)


def _parse_seqs(value: str) -> tuple[int, ...] | None:
    if value.strip() == "auto":
        return None
    try:
        seqs = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        seqs = ()
    if not seqs or min(seqs) < 1:
        raise pytest.UsageError(
            f"--attnlab-attn-seq: expected 'auto' or a comma list of positive integers, got {value!r}"
        )
    return seqs


OPTIONS = [
    OptionSpec(
        "attn",
        BASELINE_ATTENTION,
        parse_attn,
        "NAMES",
        "attention variants for tests using the attention_patch fixture: a comma list of registered "
        "names or 'all' (e.g. sdpa,sliding_window_64,mqa).",
    ),
    OptionSpec(
        "attn-seq",
        "auto",
        _parse_seqs,
        "LENS",
        "sequence lengths of suites/perf/test_attention_modules.py: a comma list, or 'auto' "
        "(128,256 on CPU; 128,256,512,1024 on CUDA).",
    ),
]


pytest_addoption, pytest_attnlab_options = area_hooks(OPTIONS)  # its marker, attention(*names): plugin.MARKERS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "attention_seq_len" in metafunc.fixturenames:
        seqs = selection(metafunc.config)["attn-seq"]
        if seqs is None:
            device = metafunc.config.stash[SESSION_KEY].settings.resolved_device()
            seqs = [128, 256] if device == "cpu" else [128, 256, 512, 1024]
        metafunc.parametrize("attention_seq_len", seqs, ids=[f"seq{n}" for n in seqs])
    if "attention_patch" not in metafunc.fixturenames:
        return
    names = selection(metafunc.config)["attn"]
    marker = metafunc.definition.get_closest_marker("attention")
    if marker is not None:
        names = [n for arg in marker.args for n in parse_attn(arg)]
    metafunc.parametrize("attention_patch", names, indirect=True, ids=names)


@contextmanager
def applied_or_skip(model: Any, variant: Any) -> Iterator[Any]:
    """`variant` (a name or a variant) swapped into `model` (an nn.Module or a LoadedModel) for the block: the
    one way every area applies a case's attention variant (attention_patch, the perf grid, the quantization
    suite). The baseline is a no-op; a variant that cannot run on this model (its own check, or a refusal at
    install) skips the test with its reason. An error inside the block is not caught."""
    if variant == BASELINE_ATTENTION:
        yield None
        return
    from pytest_attnlab.attention import applied  # torch: only once a test uses it

    module = model if hasattr(model, "forward") else model.model
    with ExitStack() as stack:
        try:
            result = stack.enter_context(applied(module, variant))
        except (ValueError, NotImplementedError) as exc:
            pytest.skip(str(exc))
        yield result


@dataclass
class AttentionPatch:
    """What `attention_patch` gives a test: the variant and `apply(model)` (skips if it cannot run)."""

    name: str
    variant: Any

    @contextmanager
    def apply(self, model: Any) -> Iterator[Any]:
        with applied_or_skip(model, self.variant) as result:
            yield result


@pytest.fixture
def attention_patch(request: pytest.FixtureRequest) -> AttentionPatch:
    """One attention variant per test (parametrized from --attnlab-attn or `@pytest.mark.attention`).

    `with attention_patch.apply(model) as a:` runs the block with the variant swapped in; the CSV
    `attention` column of this test's `metrics` rows is set to the variant name.
    """
    from pytest_attnlab.attention import ATTENTION  # torch: only once a test uses it

    name = getattr(request, "param", None) or selection(request.config)["attn"][0]
    if "metrics" in request.fixturenames:
        request.getfixturevalue("metrics").update_context(attention=name)
    return AttentionPatch(name, ATTENTION.get(name))


@pytest.fixture(scope="session")
def attention_sample(attnlab_model: Any) -> Any:
    """(ids [1, 512] of the embedded prose sample on the model's device, dense reference capture);
    512 synthetic ids when the model has no tokenizer."""
    from pytest_attnlab import probe  # torch: only once a test uses it
    from pytest_attnlab.attention.evaluate import sample_ids  # torch: only once a test uses it

    if attnlab_model.tokenizer is None:
        ids = synthetic_ids(attnlab_model.model.get_input_embeddings().num_embeddings, 512)
    else:
        ids = sample_ids(attnlab_model.tokenizer, 512)
    ids = ids.to(attnlab_model.device)
    return ids, probe.capture(attnlab_model.model, ids)
