"""A checkpoint folder that cannot work says so once, plainly: a corrupt weights file is a usage error
at start naming the file and the reason; a config without eos_token_id fails test_special_tokens with
"generation never stops"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_checkpoints import embedded_tokenizer, save

from pytest_attnlab.models.random_models import build
from pytest_attnlab.models.spec import ModelSpecError, parse_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-qwen2 saved, then its model.safetensors cut to its first 100 bytes (an interrupted copy)."""
    folder = save(build("tiny-qwen2", num_hidden_layers=1), tmp_path_factory.mktemp("ckpt") / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return folder


def test_a_truncated_weights_file_is_refused_with_its_name_and_reason(truncated: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"model\.safetensors cannot be read \(.*invalid header length"):
        parse_model(str(truncated))
    weights = truncated / "model.safetensors"
    whole = save(build("tiny-qwen2", num_hidden_layers=1), truncated.parent / "whole") / "model.safetensors"
    weights.write_bytes(whole.read_bytes()[:-1])  # one byte short: the header parses, the data does not
    try:
        with pytest.raises(ModelSpecError, match="model.safetensors cannot be read .*not fully covered"):
            parse_model(str(truncated))
    finally:
        weights.write_bytes(whole.read_bytes()[:100])
    assert parse_model(str(whole.parent)).source == "local"


def test_a_truncated_checkpoint_is_one_usage_error_at_start(pytester: pytest.Pytester, truncated: Path) -> None:
    pytester.makepyfile(test_a="def test_one(attnlab_model): pass\ndef test_two(attnlab_model): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--attnlab-model", str(truncated))
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    err = result.stderr.str()
    assert err.count("model.safetensors cannot be read (Error while deserializing header: invalid header length)") == 1
    assert "SafetensorError" not in result.stdout.str() + err


def test_no_eos_in_the_config_says_generation_never_stops(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = build("tiny-qwen2", num_hidden_layers=1)
    model.config.eos_token_id = None
    model.generation_config.eos_token_id = None
    folder = save(model, tmp_path_factory.mktemp("ckpt") / "no-eos", embedded_tokenizer())
    shutil.copy(REPO / "suites" / "correctness" / "test_tokenizer.py", pytester.path)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-k", "special_tokens", "--attnlab-model", str(folder), "test_tokenizer.py"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*generation never stops: the checkpoint sets no eos_token_id*"])
    result.stdout.no_fnmatch_line("*in [[]None[]]*")
