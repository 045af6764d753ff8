"""The fast path's Triton kernels (paths/triton_gemv.py, paths/triton_attention.py) on CPU, through Triton's
interpreter: each check runs in a subprocess with TRITON_INTERPRET=1, which Triton reads when it defines a
kernel. Against torch references with explicit tolerances, and each with the bug it exists to catch planted.
The interpreter multiplies bfloat16 tl.dot operands wrongly, so the attention kernel runs in float16 here;
on the H200 it runs in bfloat16 under suites/perf/test_fast_path.py. Skipped without the triton package
(CUDA torch wheels bring it; on a CPU machine `pip install triton` runs these: triton 3.9 or newer with numpy
2, whose interpreter takes a loop bound passed as an argument; 3.6's does not)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed: CUDA torch wheels bring it; on CPU `pip install triton` runs these kernels "
    "in its interpreter",
)

PRELUDE = """
import torch
import torch.nn.functional as F
from torch.testing import assert_close
torch.manual_seed(0)
BF16 = dict(atol=1e-2, rtol=2 ** -7)  # one bfloat16 rounding of a float32 sum the kernel orders its own way
"""

#: the rows kernels (dense with bias; RMSNorm prologue with the residual epilogue; silu(gate) * up) at one
#: shape and launch config against HF's ops: the rows and split-K tests' shared check
ROWS_CHECK = """
from pytest_attnlab.paths import triton_gemv as K
from pytest_attnlab.paths.static_decode import rms_norm
dt, eps, tol = torch.float16, 1e-6, dict(atol=2e-3, rtol=2e-3)
def check(rows, n, k, bias, cfg=None):
    x, w = torch.randn(rows, k, dtype=dt), torch.randn(2 * n, k, dtype=dt) / 8
    b = torch.randn(n, dtype=dt) if bias else None
    g, res = torch.rand(k, dtype=dt) + 0.5, torch.randn(rows, n, dtype=dt)
    h = rms_norm(x, g, eps)
    assert_close(K.dense(x, w[:n], b, cfg=cfg), F.linear(x, w[:n], b), **tol)
    assert_close(K.dense(x, w[:n], b, cfg=cfg, norm=(g, eps), residual=res), res + F.linear(h, w[:n], b), **tol)
    assert_close(K.dense_silu_mul(x, w, cfg=cfg, norm=(g, eps)), F.silu(F.linear(h, w[:n])) * F.linear(h, w[n:]),
                 **tol)
"""

#: the planted split-K bug of two tests (`K._split_k_sum = no_reset` plants it): the last program of a tile
#: sums the partials, then puts the tile's counter back up to SPLIT after resetting it, so every call after the
#: first finds a stale count
NO_RESET = """
import triton
import triton.language as tl
from pytest_attnlab.paths import triton_gemv as K
sum_of = K._split_k_sum.fn
@triton.jit
def no_reset(a, b, offs, ok, ws_ptr, cnt_ptr, TILE: tl.constexpr, SPLIT: tl.constexpr, TWO: tl.constexpr):
    tile = tl.program_id(0)
    last = tl.atomic_add(cnt_ptr + tile, 0) == SPLIT - 1
    sa, sb, _ = sum_of(a, b, offs, ok, ws_ptr, cnt_ptr, TILE, SPLIT, TWO)
    if last:  # the bug: the count goes back up to SPLIT after the reset (as if never reset)
        tl.atomic_add(cnt_ptr + tile, SPLIT)
    return sa, sb, last
"""


def interpret(code: str, interpreter: bool = True, setup: str = "") -> str:
    """Run `code` after PRELUDE and `setup` in a fresh Python, in Triton's interpreter (or not: compile only)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpreter:
        env["TRITON_INTERPRET"] = "1"
    res = subprocess.run(
        [sys.executable, "-c", PRELUDE + setup + textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res.stdout


def test_dense_gemv_matches_f_linear():
    interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    # one row: the GEMV kernel (more rows take the tl.dot kernel, checked in float16 below: the interpreter's
    # bfloat16 tl.dot is wrong)
    for rows, n, k, bias, cfg in [(1, 40, 576, False, None), (1, 64, 256, True, None), (1, 17, 96, True, None),
                                  (1, 33, 300, False, K.Config(2, 128, 4)), (1, 8, 64, True, K.Config(4, 1024, 2, 3))]:
        x, w = torch.randn(rows, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
        b = torch.randn(n, dtype=torch.bfloat16) if bias else None
        ref = F.linear(x.float(), w.float(), None if b is None else b.float())
        assert_close(K.dense(x, w, b, cfg=cfg).float(), ref, **BF16)
    """)


def test_fused_silu_mul_matches_hf_mlp_and_catches_swapped_halves():
    out = interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    x, w = torch.randn(1, 576, dtype=torch.bfloat16), torch.randn(2 * 48, 576, dtype=torch.bfloat16) / 8
    gate, up = w[:48], w[48:]
    hf = F.silu(F.linear(x, gate)) * F.linear(x, up)  # HF's MLP, op by op in bfloat16
    # gate and up each one rounding off cuBLAS', carried through silu and the product: a few bfloat16 ulps
    MLP = dict(atol=2e-2, rtol=3 * 2 ** -7)
    assert_close(K.dense_silu_mul(x, w).float(), hf.float(), **MLP)
    planted = K.dense_silu_mul(x, torch.cat([up, gate]))  # the bug: silu applied to up, not gate
    try:
        assert_close(planted.float(), hf.float(), **MLP)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n"), "swapped gate/up halves passed the check"


def test_dense_gemv_reads_every_input_column():
    out = interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    x, w = torch.randn(1, 300, dtype=torch.bfloat16), torch.randn(16, 300, dtype=torch.bfloat16)
    ref = F.linear(x.float(), w.float())
    assert_close(K.dense(x, w, cfg=K.Config(1, 128, 4)).float(), ref, **BF16)  # 300 = 2 full steps + a tail
    # the bug a mask-free tail would be: the last 44 columns never read
    short = F.linear(x[:, :256].float(), w[:, :256].float())
    try:
        assert_close(short, ref, **BF16)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_norm_prologue_and_residual_epilogue_match_hf_ops():
    """triton-fused's GEMVs against HF's ops in their order (float16 in the interpreter): RMSNorm then the
    linear, plus the residual; silu(gate) * up of the normed input. The bug planted: the norm's weight
    left out of the prologue."""
    out = interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    from pytest_attnlab.paths.static_decode import rms_norm
    dt, eps = torch.float16, 1e-6
    for n, k, cfg in [(40, 576, None), (33, 300, K.Config(2, 128, 4))]:  # 300: a tail in both passes
        x, w = torch.randn(1, k, dtype=dt), torch.randn(2 * n, k, dtype=dt) / 8
        g, res = torch.rand(k, dtype=dt) + 0.5, torch.randn(1, n, dtype=dt)
        h = rms_norm(x, g, eps)
        assert_close(K.dense(x, w[:n], cfg=cfg, norm=(g, eps), residual=res), res + F.linear(h, w[:n]))
        assert_close(K.dense(x, w[:n], cfg=cfg, residual=res), res + F.linear(x, w[:n]))
        mlp = F.silu(F.linear(h, w[:n])) * F.linear(h, w[n:])
        assert_close(K.dense_silu_mul(x, w, cfg=cfg, norm=(g, eps)), mlp)
    try:  # the bug: the norm's weight dropped (the prologue normalises only)
        assert_close(K.dense(x, w[:n], cfg=cfg, norm=(torch.ones_like(g), eps), residual=res), res + F.linear(h, w[:n]))
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_qkv_rope_cache_kernel_matches_hf_and_writes_only_its_position():
    """One token's q/k/v GEMV with the RMSNorm before it and RoPE and the cache writes after it, against
    static_decode's (HF's) ops; a bias, GQA, two head widths. Planted: cos and sin swapped."""
    out = interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    from pytest_attnlab.paths.static_decode import rms_norm, rope
    dt, eps = torch.float16, 1e-6
    def run(hq, hkv, d, k, pos, cfg, swap=False):
        x, w = torch.randn(1, 1, k, dtype=dt), torch.randn((hq + 2 * hkv) * d, k, dtype=dt) / 8
        b, g = torch.randn((hq + 2 * hkv) * d, dtype=dt), torch.rand(k, dtype=dt) + 0.5
        angle = torch.rand(d // 2) * 6
        cos, sin = (torch.cat([f(angle)] * 2).to(dt) for f in (torch.cos, torch.sin))
        kc, vc = torch.zeros(1, hkv, 12, d, dtype=dt), torch.zeros(1, hkv, 12, d, dtype=dt)
        q = K.qkv_rope_cache(x, (g, eps), w, b, *((sin, cos) if swap else (cos, sin)), torch.tensor([pos]), kc, vc,
                             hq, cfg=cfg)
        qkv = F.linear(rms_norm(x, g, eps), w, b).view(1, 1, hq + 2 * hkv, d)
        qk = rope(qkv[:, :, : hq + hkv], cos[None, None, None], sin[None, None, None])
        assert_close(q.view(hq, d), qk[0, 0, :hq])
        assert_close(kc[0, :, pos], qk[0, 0, hq:])
        assert_close(vc[0, :, pos], qkv[0, 0, hq + hkv :])
        others = [p for p in range(12) if p != pos]
        assert not kc[0, :, others].any() and not vc[0, :, others].any()  # nothing written elsewhere
    run(4, 2, 16, 96, 5, K.Config(2, 64, 4))
    run(3, 1, 64, 192, 11, None)  # SmolLM2's head width, the default config, the cache's last position
    try:
        run(4, 2, 16, 96, 5, K.Config(2, 64, 4), swap=True)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_rows_kernels_match_hf_ops_and_compute_every_row():
    """2-32 rows (batch 2-32 decode) through the tl.dot kernels: the plain GEMV with a bias, the RMSNorm
    prologue with the residual epilogue, silu(gate) * up, each against HF's ops (float16 in the interpreter).
    Planted: the tile of rows not padded up to the batch (32 rows in a 16-row tile: rows 16-31 never
    computed)."""
    out = interpret(setup=ROWS_CHECK, code="""
    from pytest_attnlab.paths import triton_gemv as K
    for rows, n, k, bias, cfg in [(2, 40, 576, False, None), (8, 33, 300, True, None), (5, 64, 256, True, None),
                                  (32, 17, 96, False, None), (8, 40, 96, True, K.Config(32, 32, 4, 2))]:
        check(rows, n, k, bias, cfg)  # 300 and 96: a tail column step; 33, 17: a tail of output rows
    K._block_m = lambda rows: K.MIN_DOT  # the bug: the tile's rows not padded up to the batch
    try:
        check(32, 17, 96, False)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_split_k_rows_kernel_sums_every_split_and_resets_its_counters():
    """Split-K at 2+ rows (config kSPLIT): each output tile's programs take runs of K, the last to finish
    adds them in split order and runs the epilogue. Against HF's ops with a tail column run (300 = 3 runs of
    96 + 12), a split with no columns at all (96 columns in 4 ways of 32), bias, norm, residual and silu * up;
    each check calls the kernel three times on the same counters, so a counter left at SPLIT by one launch
    breaks the next. Planted: the last program does not reset its tile's counter."""
    out = interpret(setup=ROWS_CHECK + NO_RESET, code="""
    for rows, n, k, bias, cfg in [(8, 40, 576, True, K.Config(16, 64, 4, 2, split=3)),
                                  (5, 33, 300, False, K.Config(16, 32, 4, 1, split=4)),
                                  (3, 17, 96, True, K.Config(16, 32, 4, 1, split=4))]:
        check(rows, n, k, bias, cfg)
    assert int(K._COUNTERS[torch.device("cpu")].abs().sum()) == 0
    try:
        K.dense(torch.randn(1, 64, dtype=dt), torch.randn(16, 64, dtype=dt), cfg=K.Config(16, 32, 4, split=2))
    except ValueError as exc:
        assert "one row" in str(exc)
    else:
        raise AssertionError("one row at a split config ran")
    K._split_k_sum = no_reset
    try:
        check(8, 40, 576, True, K.Config(16, 64, 4, 2, split=3))
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_qkv_rope_rows_kernel_writes_each_rows_cache_at_the_position():
    """The q/k/v kernel at batch 3 and 8 (one token a row, the same position): q, RoPE(k) and v of row m
    against HF's ops, written into cache row m at pos and nowhere else. The check tells the rows apart:
    the same inputs with the rows in reverse order fail it. Split-K too (3 and 4 ways, one run empty), called
    twice on the same counters."""
    out = interpret("""
    from pytest_attnlab.paths import triton_gemv as K
    from pytest_attnlab.paths.static_decode import rms_norm, rope
    dt, eps = torch.float16, 1e-6
    def run(batch, hq, hkv, d, k, pos, reverse=False, cfg=None):
        x, w = torch.randn(batch, 1, k, dtype=dt), torch.randn((hq + 2 * hkv) * d, k, dtype=dt) / 8
        b, g = torch.randn((hq + 2 * hkv) * d, dtype=dt), torch.rand(k, dtype=dt) + 0.5
        angle = torch.rand(d // 2) * 6
        cos, sin = (torch.cat([f(angle)] * 2).to(dt) for f in (torch.cos, torch.sin))
        kc, vc = torch.zeros(batch, hkv, 12, d, dtype=dt), torch.zeros(batch, hkv, 12, d, dtype=dt)
        q = K.qkv_rope_cache(x.flip(0) if reverse else x, (g, eps), w, b, cos, sin, torch.tensor([pos]), kc, vc, hq,
                             cfg=cfg)
        qkv = F.linear(rms_norm(x, g, eps), w, b).view(batch, 1, hq + 2 * hkv, d)
        qk = rope(qkv[:, :, : hq + hkv], cos[None, None, None], sin[None, None, None])
        tol = dict(atol=2e-3, rtol=2e-3) if cfg else {}  # split-K sums in another order: an ulp apart at times
        assert_close(q.view(batch, hq, d), qk[:, 0, :hq], **tol)
        assert_close(kc[:, :, pos], qk[:, 0, hq:], **tol)
        assert_close(vc[:, :, pos], qkv[:, 0, hq + hkv :], **tol)
        others = [p for p in range(12) if p != pos]
        assert not kc[:, :, others].any() and not vc[:, :, others].any()  # nothing written elsewhere
    run(3, 4, 2, 32, 96, 5)
    run(8, 3, 1, 64, 192, 11)  # SmolLM2's head width and group, the cache's last position
    for _ in range(2):
        run(3, 4, 2, 32, 96, 5, cfg=K.Config(16, 32, 4, split=4))  # 3 steps of 32 in 4 ways: one run empty
        run(8, 3, 1, 64, 200, 11, cfg=K.Config(16, 64, 4, split=3))  # a short last run
    try:
        run(3, 4, 2, 32, 96, 5, reverse=True)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_split_kv_decode_attention_matches_softmax_over_the_visible_positions():
    out = interpret("""
    from pytest_attnlab.paths.triton_attention import decode_attention
    def reference(q, k, v, visible, scale):
        s = (q.float() @ k.float().transpose(-1, -2)) * scale
        return s.masked_fill(~visible, float("-inf")).softmax(-1) @ v.float()
    # (batch, KV heads, query heads a KV head, cache length, head dim, last visible position): chunks wholly
    # hidden, a prefix of one position, SmolLM2's 3 heads a group, a group wider than a tile's 16 rows
    # 2200 positions: 35 chunks, more than the combine kernel's 32 a load
    for b, hkv, g, length, d, pos in [(1, 2, 8, 640, 128, 517), (2, 3, 3, 96, 64, 40), (1, 2, 8, 640, 128, 0),
                                      (1, 1, 24, 200, 32, 199), (1, 1, 4, 2200, 32, 2150)]:
        q = torch.randn(b, hkv, g, d, dtype=torch.float16)
        k, v = (torch.randn(b, hkv, length, d, dtype=torch.float16) for _ in range(2))
        visible = torch.arange(length) <= pos
        expected = reference(q, k, v, visible, d ** -0.5)
        assert_close(decode_attention(q, k, v, visible, d ** -0.5).float(), expected, atol=2e-3, rtol=2e-3)
    # the bug the mask exists to stop: attending to the cache's unwritten tail
    try:
        assert_close(decode_attention(q, k, v, torch.ones_like(visible), d ** -0.5).float(),
                     reference(q, k, v, torch.arange(length) <= 100, d ** -0.5), atol=2e-3, rtol=2e-3)
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")


def test_triton_step_matches_the_torch_step_on_a_tiny_model():
    """The fast path's decode step with the Triton options (their CUDA check bypassed, the interpreter
    standing in for the GPU) against the torch step, float16: logits within float16 rounding. With
    triton-fused each layer runs layer_forward's fused branch (four fused GEMVs and the attention)."""
    interpret("""
    from pytest_attnlab.models import random_models
    from pytest_attnlab.paths import static_decode as sd, fast_weights as FW
    from pytest_attnlab.paths.fast_triton import TritonDense, TritonFusedDense
    FW.GEMV_FORMATS.register("triton", lambda device: (TritonDense, FW.Int4), replace=True)
    FW.GEMV_FORMATS.register("triton-fused", lambda device: (TritonFusedDense, FW.Int4), replace=True)
    model = random_models.build("tiny-qwen2", dtype=torch.float16, vocab_size=512)  # the interpreter runs each program
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(0))
    def steps(gemv, attention):
        sm = sd.from_hf(model, gemv=gemv)
        sm.decode_attention = attention
        cache = sd.new_cache(sm, ids.shape[0], 64)
        tok, out = sd.greedy(sd.prefill(sm, cache, ids)), []
        for i in range(4):
            out.append(sd.decode_one_token(sm, cache, tok, torch.tensor([40 + i])).float())
            tok = sd.greedy(out[-1])
        return torch.stack(out)
    reference = steps("torch", "math")
    assert_close(steps("triton", "triton"), reference, atol=5e-3, rtol=5e-3)
    assert_close(steps("triton-fused", "math"), reference, atol=5e-3, rtol=5e-3)
    fused = sd.from_hf(model, gemv="triton-fused")
    assert all(isinstance(lin, TritonFusedDense) for lin in (fused.layers[0].qkv, fused.layers[0].down))
    # batch 3 with 32-wide heads: the fused branch at three rows (the tl.dot kernels), one token a row
    model = random_models.build("tiny-qwen2", dtype=torch.float16, vocab_size=512, hidden_size=128)
    ids = torch.randint(0, 512, (3, 40), generator=torch.Generator().manual_seed(1))
    assert sd._fused_rows(sd.from_hf(model, gemv="triton-fused").layers[0].qkv, 32) >= 3
    reference = steps("torch", "math")
    assert_close(steps("triton-fused", "triton"), reference, atol=5e-3, rtol=5e-3)
    assert_close(steps("triton", "math"), reference, atol=5e-3, rtol=5e-3)
    """)


def test_fused_step_under_torch_compile_matches_eager_torch_and_writes_the_cache():
    """triton-fused's step compiled as the fast path compiles it (fullgraph, static shapes; inductor's CPU
    backend here, the kernels in the interpreter), its q/k/v op writing the caches in place under
    torch.compile: logits equal the eager torch step's; each decode step's position is written, the
    ones after it are not."""
    interpret("""
    from pytest_attnlab.models import random_models
    from pytest_attnlab.paths import static_decode as sd, fast_weights as FW
    from pytest_attnlab.paths.fast_triton import TritonFusedDense
    FW.GEMV_FORMATS.register("triton-fused", lambda device: (TritonFusedDense, FW.Int4), replace=True)
    torch.set_grad_enabled(False)  # as the fast path runs its step
    model = random_models.build("tiny-qwen2", dtype=torch.float16, vocab_size=512)
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(0))
    def steps(gemv, compiled):
        sm = sd.from_hf(model, gemv=gemv)
        sm.decode_attention = "math"
        cache = sd.new_cache(sm, ids.shape[0], 64)
        step = lambda tok, pos: sd.decode_one_token(sm, cache, tok, pos)
        step = torch.compile(step, fullgraph=True, dynamic=False) if compiled else step
        tok, out = sd.greedy(sd.prefill(sm, cache, ids)), []
        for i in range(4):
            out.append(step(tok, torch.tensor([40 + i])).float())
            tok = sd.greedy(out[-1])
        return torch.stack(out), cache
    reference, _ = steps("torch", False)
    fused, cache = steps("triton-fused", True)
    assert_close(fused, reference, atol=5e-3, rtol=5e-3)
    written = [bool(cache.k[0][0, :, p].any() and cache.v[0][0, :, p].any()) for p in range(40, 46)]
    assert written == [True] * 4 + [False] * 2, written
    # batch 3 with 32-wide heads: the rows kernels under torch.compile (their fake shapes must match the op's)
    model = random_models.build("tiny-qwen2", dtype=torch.float16, vocab_size=512, hidden_size=128)
    ids = torch.randint(0, 512, (3, 40), generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    reference, _ = steps("torch", False)
    fused, cache = steps("triton-fused", True)
    assert_close(fused, reference, atol=5e-3, rtol=5e-3)
    assert all(bool(cache.k[0][row, :, 43].any()) for row in range(3)) and not cache.k[0][:, :, 44].any()
    """)


def test_config_parse_and_its_errors():
    from pytest_attnlab.paths.triton_gemv import Config

    assert Config.parse("2x2048w4s3nopdl", pdl=True) == Config(2, 2048, 4, 3, False)
    assert Config.parse("1x1024w4", pdl=False) == Config(1, 1024, 4, 1, False)
    assert Config.parse("1x1024w4", pdl=False).label == "1x1024w4s1nopdl"
    assert Config.parse("16x256w4s3k4nopdl", pdl=True) == Config(16, 256, 4, 3, False, split=4)
    assert Config.parse("16x256w4s3k4", pdl=False).label == "16x256w4s3k4nopdl"
    with pytest.raises(ValueError, match="is not a GEMV config"):
        Config.parse("1x1024", pdl=False)


def test_gemv_kernels_compile_for_hopper():
    """Every GEMV kernel variant the fast path launches, compiled ahead of time for sm_90 (Triton's own
    ptxas, no GPU needed): the CUDA backend rejects what the interpreter lets through (mixed types
    across constexpr branches, scalar masks). PDL variants must emit the griddepcontrol instructions."""
    out = interpret("""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pytest_attnlab.paths import triton_gemv as K
    def build(fn, types, **constexprs):
        names = [p.name for p in fn.params]
        src = ASTSource(fn=fn, signature={n: types.get(n, "constexpr") for n in names},
                        constexprs={(names.index(k),): v for k, v in constexprs.items()})
        return triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    ptr = dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "g_ptr", "res_ptr", "y_ptr", "cos_ptr", "sin_ptr", "q_ptr",
                         "k_ptr", "v_ptr"], "*bf16")
    ints = dict.fromkeys(["M", "N", "K", "stride_xm", "stride_wn", "stride_ym", "stride_kb", "stride_kh", "stride_vb",
                          "stride_vh"], "i32")
    types = {**ptr, **ints, "eps": "fp32", "pos_ptr": "*i64"}
    for silu, norm, res, bias, bn, bk in [(0, 0, 0, 1, 2, 1024), (0, 0, 1, 0, 2, 1024), (1, 1, 0, 0, 1, 2048),
                                          (0, 0, 1, 0, 1, 1024), (1, 0, 0, 0, 1, 2048), (0, 1, 0, 0, 2, 2048)]:
        for pdl in (True, False):
            ptx = build(K._gemv_dense_kernel, types, HAS_BIAS=bool(bias), SILU_MUL=bool(silu), NORM=bool(norm),
                        RESIDUAL=bool(res), BLOCK_N=bn, BLOCK_K=bk, PDL=pdl)
            assert ("griddepcontrol" in ptx) == pdl
    for hq, hkv, d, bias in [(16, 2, 128, True), (9, 3, 64, False)]:
        ptx = build(K._gemv_qkv_rope_kernel, types, HQ=hq, HKV=hkv, D=d, HAS_BIAS=bias, HB=1, BLOCK_K=1024, PDL=True)
        assert "griddepcontrol" in ptx
    # the tl.dot kernels of 2-32 rows (batch 2-32), at their default configs' tiles
    for silu, norm, res, bias, bm, bn in [(0, 1, 0, 1, 16, 16), (1, 1, 0, 0, 16, 32), (0, 0, 1, 0, 32, 16),
                                          (0, 0, 0, 0, 16, 64)]:
        for split in (1, 4):  # split-K: the partials' workspace, the tile counters' atomics
            ptx = build(K._gemm_rows_kernel, {**types, "ws_ptr": "*fp32", "cnt_ptr": "*i32"}, HAS_BIAS=bool(bias),
                        SILU_MUL=bool(silu), NORM=bool(norm), RESIDUAL=bool(res), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=256,
                        SPLIT=split, PDL=True)  # fmt: skip
            assert "griddepcontrol" in ptx and "mma" in ptx and ("atom" in ptx) == (split > 1)
    for hq, hkv, d, bias, bm, split in [(16, 2, 128, True, 16, 1), (9, 3, 64, False, 32, 1), (16, 2, 128, True, 16, 4)]:
        ptx = build(K._qkv_rope_rows_kernel, {**types, "ws_ptr": "*fp32", "cnt_ptr": "*i32"}, HQ=hq, HKV=hkv, D=d,
                    HAS_BIAS=bias, HB=16, BLOCK_M=bm, BLOCK_K=256, SPLIT=split, PDL=True)
        assert "griddepcontrol" in ptx and "mma" in ptx and ("atom" in ptx) == (split > 1)
    from pytest_attnlab.paths import triton_attention as A  # the split-KV attention's two kernels
    types.update({"part_ptr": "*fp32", "stat_ptr": "*fp32", "out_ptr": "*bf16", "vis_ptr": "*i1", "scale": "fp32",
                  **dict.fromkeys(["L", "G", "HKV", "sqb", "sqh", "sqg", "skb", "skh", "skl", "svb", "svh", "svl",
                                   "sob", "soh", "sog"], "i32")})
    ptx = build(A._decode_chunk_kernel, types, SPLITS=10, BLOCK_G=16, BLOCK_L=32, CHUNK=64, D=128, PDL=True)
    assert "griddepcontrol" in ptx
    ptx = build(A._decode_combine_kernel, types, SPLITS=35, SPLIT_BLOCK=32, BLOCK_G=16, D=128, PDL=True)
    assert "griddepcontrol" in ptx
    print("compiled")
    """, interpreter=False)
    assert out.endswith("compiled\n")


def test_decode_gemv_check_fails_a_wrong_launch_config():
    """suites/perf/test_decode_gemv.py checks each Triton case's output against cuBLAS's after its replays:
    the kernels at a split-K config pass it on every linear of a tiny Qwen2 (q/k/v with its bias); planted,
    a split-K whose counters are not reset fails it from the second call on."""
    out = interpret(setup=NO_RESET, code="""
    import sys
    from transformers import Qwen2Config, Qwen2ForCausalLM
    sys.path.insert(0, "suites/perf")
    import test_decode_gemv as T
    from pytest_attnlab.paths import static_decode as sd
    cfg = Qwen2Config(hidden_size=128, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300)
    sm = sd.from_hf(Qwen2ForCausalLM(cfg).to(torch.float16).eval())
    def check(name):
        lins = T._linears(sm, name)
        x = torch.randn(8, lins[0].tensors()[0].shape[-1], dtype=torch.float16)
        calls, _, _ = T._calls("triton-16x32w4s1k3", name, lins, x)
        for call in calls + calls:  # the replays
            call()
        T._assert_matches_cublas(name, lins[0], x, calls[0]())
    for name in ("qkv", "o", "gate_up", "down"):
        check(name)
    K._split_k_sum = no_reset
    try:
        check("down")
    except AssertionError:
        print("caught")
    """)
    assert out.endswith("caught\n")
