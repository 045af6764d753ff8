"""`--attnlab-candidate`: a fine-tune or a GPTQ / AWQ / compressed-tensors folder against the reference.

Test checkpoints are a tiny random Phi-3 (fused projections) and the project's own exports of it
(quant.export). The readers give back exactly the fake-quantized weights the exports were made from;
the suite passes a faithful candidate of each format with `quant` = its method, names the first
diverging layer of a corrupted one (a fine-tune with one noisy layer, a GPTQ folder whose nibbles are
read backwards in one layer), and refuses a candidate of another shape or tokenizer before any test.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoints import build, embedded_tokenizer, save

from pytest_attnlab.models.candidate import load_candidate, mismatch, quant_method
from pytest_attnlab.models.dequantize import READERS, load_tensors
from pytest_attnlab.models.loader import LoadedModel, LoadOptions, load_model
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.quant import quantize
from pytest_attnlab.quant.export import export
from pytest_attnlab.quant.export.base import WEIGHTS_FILE
from pytest_attnlab.quant.export.packing import pack_int32, unpack_int32
from pytest_attnlab.quant.layers import target_linears

REPO = Path(__file__).resolve().parents[1]
#: (quantizer, format): every format, symmetric and with zero points, 4 and 8 bits
EXPORTS = [
    ("rtn-int4-g64-sym", "gptq"),
    ("rtn-int8", "gptq"),
    ("rtn-int4-g64-zp", "awq"),
    ("rtn-int4-g64-zp", "compressed-tensors"),
    ("rtn-int4-g64-sym", "compressed-tensors"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("candidates")


@pytest.fixture(scope="module")
def reference(root: Path) -> LoadedModel:
    folder = save(build("phi3"), root / "phi3", embedded_tokenizer())
    return load_model(parse_model(str(folder)))


@pytest.fixture(scope="module")
def exported(reference: LoadedModel, root: Path) -> dict[tuple[str, str], tuple[Path, torch.nn.Module]]:
    """(quantizer, format) -> (the exported folder, the fake-quantized model it holds)."""
    out = {}
    for quant, fmt in EXPORTS:
        qm = quantize(reference, quant, cache=False)
        out[(quant, fmt)] = (export(qm, fmt, dest=root / f"{quant}-{fmt}"), qm.model)
    return out


@pytest.mark.parametrize(("quant", "fmt"), EXPORTS)
def test_readers_give_back_exactly_the_exported_weights(exported, quant: str, fmt: str) -> None:
    folder, fake = exported[(quant, fmt)]
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    weights = READERS.get(config["quant_method"])(load_tensors(folder), config)
    for name, linear in target_linears(fake).items():
        torch.testing.assert_close(weights[f"{name}.weight"], linear.weight, rtol=0, atol=0, msg=name)
    assert not any(k.endswith(("qweight", "weight_packed", "qzeros", "scales")) for k in weights)


@pytest.mark.parametrize(("quant", "fmt"), EXPORTS)
def test_a_candidate_of_each_format_loads_with_its_method(reference, exported, quant: str, fmt: str) -> None:
    folder, fake = exported[(quant, fmt)]
    candidate = load_candidate(parse_model(str(folder)), LoadOptions(), reference)
    assert candidate.quant == quant_method(_config(folder)) == fmt
    assert candidate.context()["quant"] == fmt and candidate.context()["model"] == reference.spec.label
    native = fmt == "compressed-tensors" and quant.endswith("sym")  # transformers cannot load zero points
    assert candidate.how == ("native" if native else "dequantized"), candidate.notes
    if not native:
        assert "pip install 'pytest-attnlab[gptq]'" in candidate.notes["loader"] or fmt == "compressed-tensors"
    ids = torch.arange(20, 60)[None]
    with torch.no_grad():
        torch.testing.assert_close(candidate.model(ids).logits, fake(ids).logits, rtol=0, atol=1e-5)
    assert candidate.runs_dense and candidate.stored_bytes is not None


def _config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def test_a_plain_checkpoint_is_a_finetune(reference: LoadedModel) -> None:
    assert quant_method(reference.model.config) == "finetune"


def _finetune(reference: LoadedModel, folder: Path, *, scale: float, layer: int | None = None) -> Path:
    """The reference with Gaussian noise of `scale` x each weight's std: everywhere, or in one layer's down_proj."""
    model = copy.deepcopy(reference.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if layer is None:
            params = list(model.parameters())
        else:
            params = [model.model.layers[layer].mlp.down_proj.weight]
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)
    return save(model, folder, reference.tokenizer)


def _nibbles_backwards(folder: Path, layer: int, dest: Path) -> Path:
    """A GPTQ folder whose layer's down_proj reads each pair of 4-bit codes backwards (a packing bug)."""
    shutil.copytree(folder, dest)
    tensors = load_file(str(dest / WEIGHTS_FILE))
    key = f"model.layers.{layer}.mlp.down_proj.qweight"
    codes = unpack_int32(tensors[key], 4, dim=0)  # [in, out]
    tensors[key] = pack_int32(codes.reshape(-1, 2, codes.shape[1]).flip(1).reshape(codes.shape), 4, dim=0)
    save_file(tensors, str(dest / WEIGHTS_FILE), metadata={"format": "pt"})
    return dest


def _suite(pytester: pytest.Pytester, reference: LoadedModel, candidate: Path, *args: str) -> pytest.RunResult:
    suite = pytester.path / "suites"
    if not suite.exists():
        shutil.copytree(REPO / "suites" / "correctness", suite, ignore=shutil.ignore_patterns("__pycache__"))
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rs", "--attnlab-report-dir", "out",
        "--attnlab-model", reference.spec.ref, "--attnlab-candidate", str(candidate),
        str(suite / "test_candidate.py"), *args,
    )  # fmt: skip


def _rows(pytester: pytest.Pytester) -> list[dict[str, str]]:
    with open(pytester.path / "out" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_a_finetune_passes_with_quant_finetune(pytester: pytest.Pytester, reference, root: Path) -> None:
    result = _suite(pytester, reference, _finetune(reference, root / "finetune", scale=1e-3))
    assert result.ret == 0, result.stdout.str()[-4000:]
    assert result.assert_outcomes(passed=2, skipped=2) is None
    result.stdout.fnmatch_lines(["*greedy agreement recorded, not gated: finetune: no integer weight grid*"])
    rows = _rows(pytester)
    assert {r["quant"] for r in rows} == {"finetune"} and {r["model"] for r in rows} == {reference.spec.label}
    metrics = {r["metric"] for r in rows}
    assert {"logits_cosine", "max_local_error", "greedy_agreement", "perplexity_delta", "weight_bytes_ratio"} <= metrics
    ratio = next(float(r["value"]) for r in rows if r["metric"] == "weight_bytes_ratio")
    assert ratio == pytest.approx(1.0, abs=1e-4)  # the same shapes at the same dtype (RoPE buffers are not saved)


def test_a_corrupted_layer_is_named_as_the_first_diverging_one(pytester: pytest.Pytester, reference, root) -> None:
    corrupted = _finetune(reference, root / "corrupted", scale=2.0, layer=1)
    result = _suite(pytester, reference, corrupted, "-k", "matches_reference")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*max_local_error * <= 0.1: FAILED (at layer 1)*first divergent layer: 1 *"])


@pytest.mark.parametrize(("quant", "fmt"), [("rtn-int4-g64-zp", "awq"), ("rtn-int4-g64-sym", "gptq")])
def test_a_quantized_candidate_passes_the_calibrated_gate(pytester, reference, exported, quant, fmt) -> None:
    result = _suite(pytester, reference, exported[(quant, fmt)][0], "-k", "matches_reference or weight_bytes")
    assert result.ret == 0, result.stdout.str()[-4000:]
    rows = _rows(pytester)
    assert {r["quant"] for r in rows} == {fmt}
    assert any(r["metric"] == "local_error_ratio" and json.loads(r["extra"])["reference_method"] for r in rows)


def test_next_token_choices_are_held_to_the_grids_rtn(pytester, reference, exported, root) -> None:
    faithful = exported[("rtn-int4-g64-sym", "gptq")][0]
    result = _suite(pytester, reference, faithful, "-k", "greedy_agreement or perplexity_delta")
    result.assert_outcomes(passed=1, skipped=1, deselected=2)
    result.stdout.fnmatch_lines(["*the perplexity delta recorded, not gated: untrained weights*"])
    rows = {r["metric"]: r for r in _rows(pytester)}
    assert float(rows["greedy_agreement"]["value"]) >= float(rows["greedy_agreement"]["threshold"]) > 0.5
    folder = _nibbles_backwards(faithful, 1, root / "gptq-nibbles-layer1")
    result = _suite(pytester, reference, folder, "-k", "test_candidate_greedy_agreement")
    assert result.ret == 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*gptq agrees with the reference on *% of next tokens; rtn-int4-g64-sym on *"])


def test_a_packing_bug_in_one_gptq_layer_fails_and_is_named(pytester, reference, exported, root) -> None:
    folder = _nibbles_backwards(exported[("rtn-int4-g64-sym", "gptq")][0], 1, root / "gptq-nibbles")
    result = _suite(pytester, reference, folder, "-k", "matches_reference")
    assert result.ret == 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*local_error_ratio * <= 2: FAILED (max over layers, at layer 1)*"])
    result.stdout.fnmatch_lines(["*first divergent layer: 1 (local error*"])


@pytest.mark.parametrize("kind", ["finetune", "gptq"])
def test_latency_side_by_side_or_the_reason_there_is_none(pytester, reference, exported, root, kind) -> None:
    """TTFT/TPOT of both models for a fine-tune; a candidate read into float weights has no timings of
    its format, and the skip says which library would give them."""
    if kind == "finetune":
        candidate = _finetune(reference, root / "finetune-perf", scale=1e-3)
    else:
        candidate = exported[("rtn-int4-g64-sym", "gptq")][0]
    shutil.copytree(REPO / "suites" / "perf", pytester.path / "perf", ignore=shutil.ignore_patterns("__pycache__"))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-rs", "--attnlab-report-dir", "out",
        "--attnlab-model", reference.spec.ref, "--attnlab-candidate", str(candidate),
        str(pytester.path / "perf" / "test_candidate_perf.py"),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    if kind == "gptq":
        result.stdout.fnmatch_lines(["*runs dense float weights here (gptq weights dequantized by pytest-attnlab's*"])
        return
    rows = {r["metric"]: float(r["value"]) for r in _rows(pytester)}
    for key in ("ttft", "tpot"):
        assert rows[f"{key}_reference"] > 0 and rows[f"{key}_candidate"] > 0
        assert rows[f"{key}_ratio"] == pytest.approx(rows[f"{key}_candidate"] / rows[f"{key}_reference"])


def test_a_candidate_of_another_shape_is_a_usage_error(pytester, reference, root) -> None:
    other = save(build("phi3", num_hidden_layers=3), root / "phi3-3-layers", reference.tokenizer)
    result = _suite(pytester, reference, other)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attnlab-candidate phi3-3-layers cannot be compared*num_hidden_layers 2 vs 3*"])


def test_a_candidate_with_another_tokenizer_is_a_usage_error(reference, root) -> None:
    tokenizer = copy.deepcopy(reference.tokenizer)
    tokenizer.add_tokens(["<attnlab-extra>"])
    other = save(build("phi3"), root / "phi3-other-tokenizer", tokenizer)
    why = mismatch(reference.spec, parse_model(str(other)))
    assert why == "the candidate's tokenizer differs from the reference's: vocabulary sizes 49152 vs 49153"
    assert mismatch(reference.spec, parse_model(str(root / "phi3"))) is None


def test_the_outer_gate_follows_the_rtn_reference_on_random_weights_only(reference: LoadedModel) -> None:
    # Healthy RTN int4 of the random Qwen2.5-0.5B shape keeps a logits cosine of 0.83 (CPU and H200
    # alike): random weights amplify rounding, so a fixed 0.95 floor failed every healthy candidate there.
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("suite_candidate", REPO / "suites/correctness/test_candidate.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    recorded = []
    metrics = SimpleNamespace(record=lambda *a, **k: recorded.append(a))
    calibration = SimpleNamespace(logits_cosine=0.83)
    assert suite._outer_gate(reference, 0.95, calibration, metrics) == pytest.approx(0.66)  # untrained init
    assert suite._outer_gate(reference, 0.95, None, metrics) == 0.95  # nothing to calibrate against
    trained = copy.deepcopy(reference)
    with torch.no_grad():
        for p in trained.model.parameters():
            p.mul_(3.0)  # no longer the random init's spread
    assert suite._outer_gate(trained, 0.95, calibration, metrics) == 0.95
    assert recorded and recorded[0][0] == "rtn_reference_logits_cosine"
