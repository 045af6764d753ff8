"""Long-context prefill and decode memory of attention variants on a random-init Qwen2.5 shape (GPU).

    PYTHONPATH=. python scripts/gpu/attention_long_context.py --model qwen2.5-0.5b-instruct

Prefill: one forward over N random tokens (logits of the last position only), timed with CUDA
syncs; peak memory above the weights. Decode: memory still held after the prefill (the cache or,
for linear attention with LinearStateCache, the recurrent state) and one decode step's time.
"""

from __future__ import annotations

import argparse
import time

import torch

from pytest_attnlab.attention import (
    applied,
    block_sparse,
    linear_attention,
    linear_state_cache,
    sdpa,
    sliding_window,
)
from pytest_attnlab.attention.variants.linear import state_bytes
from pytest_attnlab.models import random_models

MiB = 2**20


def variants(args: argparse.Namespace) -> list:
    return [
        sdpa(),
        sliding_window(args.window, sinks=4),
        block_sparse(128, args.topk),
        linear_attention("elu", chunk=args.chunk),
    ]


def sync_time(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


@torch.inference_mode()
def run_cell(model, variant, n: int, vocab: int) -> dict:
    from transformers import DynamicCache

    from pytest_attnlab.hf_compat import with_cache

    ids = torch.randint(0, vocab, (1, n), device="cuda", generator=torch.Generator("cuda").manual_seed(n))
    linear = variant.name.startswith("linear")
    make_cache = linear_state_cache if linear else (lambda: DynamicCache(config=model.config))
    with applied(model, variant):
        warm = make_cache()  # warm-up at this very length: compiled flex specialises on shapes
        model(ids, **with_cache(model, warm), use_cache=True, logits_to_keep=1)
        model(ids[:, -1:], **with_cache(model, warm), use_cache=True)
        warm = None
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        kv = make_cache()
        out, prefill_s = sync_time(lambda: model(ids, **with_cache(model, kv), use_cache=True, logits_to_keep=1))
        peak = torch.cuda.max_memory_allocated() - base
        del out
        held = torch.cuda.memory_allocated() - base
        nxt = ids[:, -1:]
        _, step_s = sync_time(lambda: model(nxt, **with_cache(model, kv), use_cache=True))
        state = state_bytes(model) if linear else 0
    kv = None  # drop the cache before the next cell
    torch.cuda.empty_cache()
    return {
        "variant": variant.name,
        "ctx": n,
        "prefill_ms": prefill_s * 1e3,
        "prefill_peak_MiB": peak / MiB,
        "decode_held_MiB": held / MiB,
        "decode_step_ms": step_s * 1e3,
        "state_MiB": state / MiB,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="qwen2.5-0.5b-instruct")
    p.add_argument("--contexts", default="1024,2048,4096,8192,16384,32768")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--budget-s", type=float, default=200.0, help="stop starting new cells after this long")
    args = p.parse_args()
    t0 = time.perf_counter()
    model = random_models.build(args.model, dtype=torch.bfloat16, device="cuda", attn_implementation="sdpa")
    vocab = model.config.vocab_size
    print(
        f"# {torch.cuda.get_device_name()} torch {torch.__version__} model random:{args.model} bf16, "
        f"weights {torch.cuda.memory_allocated() / MiB:.0f} MiB",
        flush=True,
    )
    cols = [
        "variant",
        "ctx",
        "prefill_ms",
        "prefill_peak_MiB",
        "decode_held_MiB",
        "decode_step_ms",
        "state_MiB",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)
    for variant in variants(args):
        for n in map(int, args.contexts.split(",")):
            if time.perf_counter() - t0 > args.budget_s:
                print(f"| {variant.name} | {n} | skipped: time budget |", flush=True)
                continue
            try:
                row = run_cell(model, variant, n, vocab)
            except Exception as exc:  # report the cell (OOM, a kernel the device lacks) and go on
                torch.cuda.empty_cache()
                print(f"| {variant.name} | {n} | {type(exc).__name__}: {str(exc)[:160]} |", flush=True)
                continue
            print(
                "| " + " | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
