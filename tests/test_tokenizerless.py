"""Checkpoints saved without a tokenizer: detected (no files, or transformers 5.24's empty tokenizer),
every suite test that needs no text runs on deterministic ids, the rest skip with the reason, and
`--attnlab-tokenizer embedded|PATH` borrows one."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from tiny_checkpoints import build, embedded_tokenizer, save

from pytest_attnlab.models import tokenizers
from pytest_attnlab.models.loader import load_model
from pytest_attnlab.models.random_models import build as build_random
from pytest_attnlab.models.spec import parse_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bare_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 folder without tokenizer files: transformers 5.24 loads an empty Qwen2Tokenizer from it."""
    return save(build_random("tiny-qwen2", num_hidden_layers=2), tmp_path_factory.mktemp("bare") / "qwen2")


@pytest.fixture(scope="module")
def bare_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Phi-3 folder without tokenizer files: there transformers raises instead."""
    return save(build("phi3"), tmp_path_factory.mktemp("bare") / "phi3")


def test_an_empty_tokenizer_is_unusable_and_says_why(bare_qwen2: Path) -> None:
    from transformers import AutoTokenizer

    empty = AutoTokenizer.from_pretrained(bare_qwen2)  # no error: the failure this detects
    assert empty(tokenizers.PROBE)["input_ids"] == []
    assert "empty vocabulary" in tokenizers.unusable(empty)
    assert tokenizers.unusable(embedded_tokenizer()) is None


@pytest.mark.parametrize("folder", ["bare_qwen2", "bare_phi3"])
def test_the_loader_gives_no_tokenizer_and_notes_the_reason(request: pytest.FixtureRequest, folder: str) -> None:
    loaded = load_model(parse_model(str(request.getfixturevalue(folder))))
    assert loaded.tokenizer is None
    note = loaded.notes["tokenizer"]
    assert ("empty vocabulary" in note) if folder == "bare_qwen2" else ("no tokenizer loads from" in note)
    assert loaded.context()["tokenizer_note"] == note


def test_a_borrowed_tokenizer_is_used_and_sets_the_special_ids(bare_qwen2: Path) -> None:
    from dataclasses import replace

    from pytest_attnlab.models.loader import LoadOptions

    loaded = load_model(parse_model(str(bare_qwen2)), replace(LoadOptions(), tokenizer="embedded"))
    tok = embedded_tokenizer()
    assert loaded.tokenizer.get_vocab() == tok.get_vocab()
    assert loaded.model.generation_config.eos_token_id == tok.eos_token_id
    assert loaded.notes["tokenizer"] == "borrowed from embedded"


SELECTION = [
    "test_tokenizer.py",
    "test_generation.py::test_manual_decode_equals_generate",
    "test_components.py",
    "test_layer_diff.py",
    "test_sampling.py::test_filtered_distribution_matches_hf",
    "test_quantization.py::test_baseline_perplexity",
]


def _run(pytester: pytest.Pytester, model: Path, *extra: str, selection: list[str] = SELECTION) -> pytest.RunResult:
    suite = pytester.path / "suites"
    shutil.copytree(REPO / "suites" / "correctness", suite, ignore=shutil.ignore_patterns("__pycache__"))
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rs", "--attnlab-report-dir", "out",
        "--attnlab-model", str(model), *extra, *(str(suite / s) for s in selection),
    )  # fmt: skip


def test_suite_runs_on_ids_and_skips_what_needs_text(pytester: pytest.Pytester, bare_qwen2: Path) -> None:
    result = _run(pytester, bare_qwen2)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert result.ret == 0, out[-5000:]
    assert outcomes["passed"] >= 20 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes
    assert "needs text and qwen2 has no usable tokenizer (" in out and "empty vocabulary" in out, out[-3000:]
    assert "borrow one with --attnlab-tokenizer embedded|PATH" in out
    assert "the encode/decode round trip needs text" in out and "the special-token check needs text" in out
    assert "perplexity on the embedded text" in out  # the quantization suite's baseline: text only
    with open(pytester.path / "out" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    prompt_tokens = [float(r["value"]) for r in rows if r["metric"] == "prompt_tokens"]
    assert prompt_tokens and set(prompt_tokens) == {32.0}, prompt_tokens  # synthetic prompts, never "0 tokens"
    assert all("empty vocabulary" in r["extra"] for r in rows)


def test_a_borrowed_tokenizer_brings_the_text_tests_back(pytester: pytest.Pytester, bare_qwen2: Path) -> None:
    result = _run(pytester, bare_qwen2, "--attnlab-tokenizer", "embedded", selection=["test_tokenizer.py"])
    out = result.stdout.str()
    assert result.ret == 0, out[-5000:]
    assert "needs text" not in out
    assert result.parseoutcomes()["passed"] == 10  # 5 round trips, 3 chat templates, special tokens, shapes


def test_a_tokenizer_path_that_is_not_a_folder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--attnlab-tokenizer", "/no/such/folder", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-tokenizer: '/no/such/folder' is not a folder; use 'embedded'*"])
