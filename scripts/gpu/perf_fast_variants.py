"""TPOT of the fast decode path's variants on one cell (default: Qwen2.5-3B shape, bf16, batch 1,
prompt 512, 128 new tokens): eager vs torch.compile modes, SDPA vs matmul decode attention, each
step captured in a CUDA graph. Prints one line per variant; stops starting variants after --budget s.

usage: python scripts/gpu/perf_fast_variants.py [--model random:qwen2.5-3b-instruct] [--budget 150]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pytest_attnlab.models import random_models
from pytest_attnlab.paths import FastPath, PathOptions
from pytest_attnlab.perf import roofline
from pytest_attnlab.perf.bench import GenerationBenchmark

VARIANTS = [  # (compile mode, decode attention, inductor coordinate-descent tuning)
    ("none", "sdpa", False),
    ("none", "math", False),
    ("default", "math", False),
    ("default", "math", True),
    ("default", "sdpa", False),
    ("max-autotune-no-cudagraphs", "math", True),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-3b-instruct")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--budget", type=float, default=150)
    ap.add_argument("--json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = random_models.build(args.model, dtype=dtype, device=args.device, attn_implementation="sdpa")
    peaks = roofline.device_peaks(args.device)
    print(f"peaks: {peaks.as_dict()}", flush=True)
    results = []
    for compile_mode, attention, cdt in VARIANTS:
        if time.perf_counter() - t0 > args.budget:
            print(f"budget spent: skipping {compile_mode}/{attention}/cdt={cdt}")
            continue
        torch._dynamo.reset()
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = cdt
        opts = PathOptions(compile=compile_mode, decode_attention=attention)
        gb = GenerationBenchmark(
            device=args.device,
            rounds=5,
            warmup=1,
            path_factory=lambda _n, o=opts: FastPath(o),
            peaks=lambda: peaks,
        )
        start = time.perf_counter()
        try:
            m = gb.measure(model, prompt_len=args.prompt, batch=1, new_tokens=args.new, path="fast")
        except Exception as exc:  # report and go on to the next variant
            print(f"{compile_mode:28s} {attention:5s} cdt={cdt!s:5s} FAILED: {type(exc).__name__}: {exc}"[:400])
            continue
        lat, roof = m.latency(), m.roofline()
        row = {
            "compile": compile_mode,
            "attention": attention,
            "coordinate_descent": cdt,
            "tpot_ms": lat["tpot"] * 1e3,
            "ttft_ms": lat["ttft"] * 1e3,
            "mbu_pct": roof["mbu"][0],
            "decode_tok_s": lat["decode_tok_s"],
            "setup_s": time.perf_counter() - start,
        }
        results.append(row)
        print(
            f"{compile_mode:28s} {attention:5s} cdt={cdt!s:5s} TPOT {row['tpot_ms']:.2f} ms"
            f"  MBU {row['mbu_pct']:.1f} %"
            f"  TTFT {row['ttft_ms']:.1f} ms  ({row['setup_s']:.0f} s incl. compile)",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
