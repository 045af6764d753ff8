"""Record the golden greedy generations of the embedded model (HF generate, float32, CPU).

Run after a deliberate change (new transformers, new prompts):  python scripts/record_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from pytest_attnlab.generation import hf_generate
from pytest_attnlab.models.loader import LoadOptions, load_model
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.prompts import load_prompts

MAX_NEW_TOKENS = 24
OUT = Path(__file__).resolve().parents[1] / "suites" / "correctness" / "golden" / "smollm2-135m-instruct.json"


def main() -> None:
    loaded = load_model(parse_model("embedded"), LoadOptions("cpu", torch.float32, "sdpa"))
    data = {
        "model": loaded.spec.label,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_new_tokens": MAX_NEW_TOKENS,
        "prompts": {},
    }
    for prompt in load_prompts():
        ids = prompt.encode(loaded.tokenizer)
        out = hf_generate(loaded.model, ids, MAX_NEW_TOKENS, do_sample=False)
        data["prompts"][prompt.id] = {
            "input_ids": ids[0].tolist(),
            "output_ids": out.tokens[0].tolist(),
            "text": loaded.tokenizer.decode(out.tokens[0]),
        }
        print(f"{prompt.id}: {data['prompts'][prompt.id]['text']!r}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
