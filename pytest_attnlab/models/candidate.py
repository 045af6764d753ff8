"""`--attnlab-candidate`: a second checkpoint compared against `--attnlab-model` (the reference).

A candidate is a fine-tune (a plain checkpoint of the same shape) or a pre-quantized folder (GPTQ,
AWQ, compressed-tensors) made by any tool. Its `quant` (the CSV column) is the config's
`quantization_config.quant_method`, else "finetune". It loads through transformers when the format's
library is installed and can load it; otherwise through `models.dequantize` (the format's integer
codes, scales and zero points turned into the float weights every runtime computes with), which the
loaded model's notes say. Before any test runs, `mismatch` compares the two configs' shapes and the
two tokenizers: a difference is a usage error naming it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_attnlab.models import embedded, tokenizers
from pytest_attnlab.models.loader import LoadedModel, LoadOptions, attention_for, load_model
from pytest_attnlab.models.random_models import config_of as random_config
from pytest_attnlab.models.spec import ModelSpec

FINETUNE = "finetune"
#: quant_method -> (modules transformers needs to load it natively, the pytest-attnlab extra installing them)
NATIVE = {
    "compressed-tensors": (("compressed_tensors",), "export"),
    "gptq": (("optimum", "gptqmodel"), "gptq"),
    "awq": (("gptqmodel",), "gptq"),
}
#: config fields whose values fix every tensor's shape the comparison lines up
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
)


class CandidateUnavailable(RuntimeError):
    """The candidate cannot be loaded here; the message names what to install."""


@dataclass
class CandidateModel(LoadedModel):
    """A LoadedModel whose context reports quant=<its quant_method> and which model it is."""

    quant: str = FINETUNE
    quant_config: dict[str, Any] = field(default_factory=dict)
    #: how it was loaded: "plain", "native" (transformers + the format's library) or "dequantized"
    how: str = "plain"
    #: the checkpoint's weight bytes with float tensors at the run's dtype (None: count the module's)
    stored_bytes: int | None = None
    reference: str = ""  # the reference's label: the CSV `model` of the candidate's rows

    @property
    def runs_dense(self) -> bool:
        """A quantized candidate whose decoder linears hold plain float weights at run time (dequantized
        on load, by our reader or by its library on CPU): its speed is a float model's, not the format's."""
        import torch

        from pytest_attnlab.quant.layers import target_linears  # torch: only once a test uses it

        if self.quant == FINETUNE:
            return False
        weights = [getattr(m, "weight", None) for m in target_linears(self.model).values()]
        return all(isinstance(w, torch.Tensor) and w.is_floating_point() for w in weights)

    def context(self) -> dict[str, str]:
        """Rows of a comparison read like a quantizer's: model = the reference, quant = the candidate's method."""
        own = super().context()
        return {
            **own,
            "model": self.reference or own["model"],
            "quant": self.quant,
            "candidate": self.spec.label,
            "candidate_loader": self.how,
        }

    @property
    def bits(self) -> int | None:
        qc = self.quant_config
        if self.quant == "compressed-tensors":
            groups = list((qc.get("config_groups") or {}).values())
            return int(groups[0]["weights"]["num_bits"]) if groups else None
        bits = qc.get("bits", qc.get("w_bit"))
        return int(bits) if bits else None

    @property
    def grid(self) -> tuple[int, int | None, bool] | None:
        """(bits, group size or None per channel, symmetric) of an integer weight format, else None."""
        qc, bits = self.quant_config, self.bits
        if bits is None:
            return None
        if self.quant == "compressed-tensors":
            w = next(iter(qc["config_groups"].values()))["weights"]
            return bits, w.get("group_size") if w.get("strategy") == "group" else None, bool(w.get("symmetric"))
        group = qc.get("group_size", qc.get("q_group_size"))
        symmetric = bool(qc.get("sym", not qc.get("zero_point", True)))
        return bits, None if group in (None, -1) else int(group), symmetric


def quantization_config(config: Any) -> dict[str, Any]:
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        return {}
    return dict(qc) if isinstance(qc, dict) else qc.to_dict()


def quant_method(config: Any) -> str:
    """The CSV `quant` of a candidate: its quantization_config.quant_method, else "finetune"."""
    return str(quantization_config(config).get("quant_method") or FINETUNE)


def config_of(spec: ModelSpec) -> Any:
    """The transformers config of any model spec, without loading weights."""
    from transformers import AutoConfig

    if spec.source == "random":
        return random_config(spec.ref)
    if spec.source == "embedded":
        return AutoConfig.from_pretrained(embedded.checkpoint())
    return AutoConfig.from_pretrained(spec.ref)


def _shape(config: Any) -> dict[str, Any]:
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = {f: getattr(c, f, None) for f in SHAPE_FIELDS}
    values["num_key_value_heads"] = values["num_key_value_heads"] or values["num_attention_heads"]
    values["head_dim"] = values["head_dim"] or c.hidden_size // c.num_attention_heads
    return values


def tokenizer_of(spec: ModelSpec, borrowed: str | None = None) -> Any:
    """The tokenizer the loader would give `spec` (None when it has no usable one)."""
    if borrowed:
        return tokenizers.borrow(borrowed)
    if spec.source in ("embedded", "random"):
        try:
            return embedded.tokenizer()
        except embedded.EmbeddedModelMissing:
            return None
    tokenizer = tokenizers.load(spec.ref)
    return None if isinstance(tokenizer, tokenizers.NoTokenizer) else tokenizer


def mismatch(reference: ModelSpec, candidate: ModelSpec, borrowed: str | None = None) -> str | None:
    """What makes `candidate` incomparable with `reference` (shape fields, tokenizer), or None."""
    ref, cand = _shape(config_of(reference)), _shape(config_of(candidate))
    differ = [f"{f} {ref[f]} vs {cand[f]}" for f in SHAPE_FIELDS if ref[f] != cand[f]]
    if differ:
        return f"the candidate's shape differs from the reference's: {', '.join(differ)}"
    ref_tok, cand_tok = tokenizer_of(reference, borrowed), tokenizer_of(candidate)
    if ref_tok is not None and cand_tok is not None:
        why = tokenizers.difference(ref_tok, cand_tok)
        if why:
            return f"the candidate's tokenizer differs from the reference's: {why}"
    return None


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def load_candidate(spec: ModelSpec, opts: LoadOptions, reference: LoadedModel) -> CandidateModel:
    """Load `spec` on the reference's device, dtype and attention; borrow the reference's tokenizer
    when the candidate has none. Raises CandidateUnavailable when no route loads it here."""
    config = config_of(spec)
    method, qcfg = quant_method(config), quantization_config(config)
    opts = replace(opts, attn_implementation=reference.options.attn_implementation)
    notes: dict[str, str] = {}
    how, stored = "plain", None
    if method == FINETUNE:
        loaded = load_model(spec, opts)
    else:
        needs, extra = NATIVE.get(method, ((), ""))
        missing = _missing(needs)
        native_error = None
        if not missing:
            try:
                loaded, how = load_model(spec, opts), "native"
                _settle(loaded.model)
            except (ImportError, RuntimeError, ValueError) as exc:  # e.g. asymmetric compressed-tensors zero points
                native_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        if how != "native":
            loaded, stored = _dequantized(spec, opts, config, method, qcfg, missing, extra, native_error)
            how = "dequantized"
            why = f"transformers failed: {native_error}" if native_error else f"no {', '.join(missing)}"
            hint = f"; pip install 'pytest-attnlab[{extra}]'" if missing else ""
            notes["loader"] = f"{method} weights dequantized by pytest-attnlab's reader ({why}{hint})"
    if stored is None and spec.source in ("local", "hub"):
        stored = _checkpoint_bytes(spec, opts)
    notes.update(loaded.notes)
    tokenizer = loaded.tokenizer
    if tokenizer is None and reference.tokenizer is not None:
        tokenizer = reference.tokenizer
        notes["tokenizer"] = f"none of its own ({loaded.notes.get('tokenizer', '')}): the reference's is used"
    return CandidateModel(
        loaded.model,
        tokenizer,
        spec,
        loaded.options,
        loaded.load_seconds,
        notes,
        quant=method,
        quant_config=qcfg,
        how=how,
        stored_bytes=stored,
        reference=reference.spec.label,
    )


def _settle(model: Any) -> None:
    """One short forward pass: some runtimes rebuild their layers on the first call (compressed-tensors
    decompresses every linear there on CPU), so what runs is only known after it."""
    import torch

    with torch.inference_mode():
        model(torch.tensor([[1, 2]], device=next(model.parameters()).device))


def _checkpoint_bytes(spec: ModelSpec, opts: LoadOptions) -> int | None:
    from pytest_attnlab.models import dequantize  # torch: only once a test uses it

    try:
        tensors = dequantize.load_tensors(Path(spec.ref))
    except (dequantize.UnreadableCheckpoint, OSError):
        return None  # a hub id: the module's own bytes are counted instead
    return dequantize.stored_bytes(tensors, opts.dtype)


def _dequantized(
    spec: ModelSpec,
    opts: LoadOptions,
    config: Any,
    method: str,
    qcfg: dict[str, Any],
    missing: list[str],
    extra: str,
    native_error: str | None,
) -> tuple[LoadedModel, int]:
    """The candidate built from its config with the reader's float weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from pytest_attnlab.models import dequantize  # torch: only once a test uses it

    if method not in dequantize.READERS or spec.source != "local":
        hint = f"pip install 'pytest-attnlab[{extra}]'" if extra else f"install the library of {method!r}"
        raise CandidateUnavailable(
            f"candidate {spec.label} is {method}-quantized; transformers needs {', '.join(missing) or 'its library'} "
            f"to load it ({hint})" + (f"; it failed: {native_error}" if native_error else "")
        )
    tensors = dequantize.load_tensors(Path(spec.ref))
    try:
        weights = dequantize.READERS.get(method)(tensors, qcfg)
    except dequantize.UnreadableCheckpoint as exc:
        raise CandidateUnavailable(f"candidate {spec.label}: {exc}") from exc
    config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    attn = attention_for(config, opts.attn_implementation)
    with torch.device(opts.device):
        model = AutoModelForCausalLM.from_config(config, dtype=opts.dtype, attn_implementation=attn)
    result = model.load_state_dict(
        {k: v.to(opts.dtype) if v.is_floating_point() else v for k, v in weights.items()}, strict=False
    )
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise CandidateUnavailable(
            f"candidate {spec.label}: the {method} reader's tensors do not fit {type(model).__name__} "
            f"(missing {sorted(set(result.missing_keys) - tied)[:4]}, unexpected {result.unexpected_keys[:4]})"
        )
    model.tie_weights()
    tokenizer = tokenizers.load(spec.ref)
    loaded = LoadedModel(model.eval(), None, spec, replace(opts, attn_implementation=attn), 0.0)
    reason = tokenizers.unusable(tokenizer)
    if reason:
        loaded.notes["tokenizer"] = reason
    else:
        loaded.tokenizer = tokenizer
    return loaded, dequantize.stored_bytes(tensors, opts.dtype)
