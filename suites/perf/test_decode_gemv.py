"""The decode step's GEMVs one linear at a time (issue 18): each linear of the model (q/k/v fused, o, gate/up,
down, lm_head) with the perf grid's batch sizes as rows of x (--attnlab-perf-batch), through cuBLAS (what
--attnlab-perf-fast-gemv torch runs), the Triton GEMV (--attnlab-perf-fast-gemv triton), tinygemm int4
(--attnlab-perf-fast-quant int4-g128 / int4-g32) and, beside it, vLLM's Marlin int4 on the rtn-int4-g128-zp
grid (paths/marlin_int4.py; skips without vLLM).

Each case is a CUDA graph that runs the linear once per decoder layer, every call on its own layer's
weight, so the L2 never holds the next weight, as in a real decode step; pytest-benchmark times 20
replays a round. Recorded per call: gemv_time and gemv_bandwidth (% of the device's bandwidth limit for
the bytes the call reads). gate/up runs with its silu(gate) * up, as the fast path runs it. With
--attnlab-perf-gemv-configs, the Triton GEMV also runs at each listed launch config (the tuning sweep
behind paths/triton_gemv.config). Each Triton case then checks the first layer's output, after the
replays, against cuBLAS's (1 % of the largest output, 2^-7 relative): a config that is fast and wrong fails.
Marlin's output is held the same way to cuBLAS over the grid's own dequantized weights.

    pytest suites/perf/test_decode_gemv.py --attnlab-device cuda --attnlab-model random:qwen2.5-3b-instruct
CUDA only: on CPU every case skips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

LINEARS = ("qkv", "o", "gate_up", "down", "lm_head")
#: the int4 kernels' name prefixes (the group follows): they take the decoder linears, not the lm_head
INT4_KERNELS = ("tinygemm-g", "marlin-g")
#: replays of the graph a timed round
REPLAYS = 20


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gemv_kernel" in metafunc.fixturenames:
        from pytest_attnlab.perf.plugin import PERF_STATE_KEY

        settings = metafunc.config.stash[PERF_STATE_KEY].settings
        kernels = ["cublas", "triton", "tinygemm-g128", "tinygemm-g32", "marlin-g128"]
        kernels += [f"triton-{c}" for c in settings.gemv_configs]
        metafunc.parametrize("gemv_kernel", kernels)
        # rows of x: the perf grid's batch sizes (a decode step's tokens); 2-32 take the Triton tl.dot kernels
        metafunc.parametrize("rows", sorted(set(settings.batch)), ids=lambda r: f"rows{r}")


def _linears(sm: Any, name: str) -> list[Any]:
    if name == "lm_head":
        return [sm.lm_head]
    return [getattr(layer, name) for layer in sm.layers]


def _calls(kernel: str, name: str, linears: list[Any], x: torch.Tensor) -> tuple[list[Callable[[], Any]], int, Any]:
    """One call per linear through `kernel`, the bytes one call reads, and the first layer's linear as built."""
    from pytest_attnlab.paths import fast_weights as FW

    one = (lambda lin: FW.silu_mul(lin, x)) if name == "gate_up" else (lambda lin: lin(x))  # as the step runs it
    if name == "lm_head" and kernel.startswith(INT4_KERNELS):
        pytest.skip("the int4 formats keep the lm_head dense")
    if kernel.startswith("tinygemm-g"):
        group = int(kernel.removeprefix("tinygemm-g"))
        try:  # only the format's shape check: an error of the kernel itself, in _graph, still fails
            linears = [FW.Int4(lin.weight, lin.bias, group, x.dtype) for lin in linears]
        except FW.UnsupportedShape as exc:  # a property of the model's shape (576 = 4.5 x 128), not a bug
            pytest.skip(f"{kernel} on {name}: {exc}")
    elif kernel.startswith("marlin-g"):
        from pytest_attnlab.paths import marlin_int4 as MI

        try:
            group = int(kernel.removeprefix("marlin-g"))
            # only the first layer's codes are kept: the check after the replays reads that layer alone
            first = MI.MarlinInt4(linears[0].weight, linears[0].bias, group, x.dtype, keep_reference=True)
            linears = [first] + [MI.MarlinInt4(ln.weight, ln.bias, group, x.dtype) for ln in linears[1:]]
        except (MI.MarlinUnavailable, MI.MarlinShapeError) as exc:
            pytest.skip(f"{kernel} on {name}: {exc}")
    elif kernel.startswith("triton"):
        try:
            from pytest_attnlab.paths import triton_gemv as K
            from pytest_attnlab.paths.fast_triton import TritonDense
        except ImportError as exc:
            pytest.skip(f"the Triton GEMV needs the triton package ({exc})")
        if kernel == "triton":
            linears = [TritonDense(lin.weight, lin.bias) for lin in linears]
        else:  # the kernel itself at a listed launch config
            cfg = K.Config.parse(kernel.removeprefix("triton-"), pdl=True)
            if cfg.split > 1 and x.shape[0] == 1:
                pytest.skip(f"{kernel}: split-K (kSPLIT) runs in the tl.dot kernels of 2+ rows, not at one row")
            if name == "gate_up":
                one = lambda lin: K.dense_silu_mul(x, lin.weight, cfg=cfg)  # noqa: E731
            else:
                one = lambda lin: K.dense(x, lin.weight, lin.bias, cfg=cfg)  # noqa: E731
    return [lambda lin=lin: one(lin) for lin in linears], sum(t.nbytes for t in linears[0].tensors()), linears[0]


def _graph(calls: list[Callable[[], Any]]) -> torch.cuda.CUDAGraph:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and warm up off the capture
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return graph


@pytest.mark.parametrize("linear", LINEARS)
def test_decode_gemv(request, attnlab_settings, benchmark, metrics, linear, gemv_kernel, rows):
    from pytest_attnlab.paths import static_decode as sd
    from pytest_attnlab.perf import roofline

    device = attnlab_settings.resolved_device()
    if torch.device(device).type != "cuda":
        pytest.skip("times CUDA graphs of GEMV kernels: run with --attnlab-device cuda")
    perf_model = request.getfixturevalue("perf_model")
    try:
        sm = sd.from_hf(perf_model.model)
    except sd.UnsupportedModel as exc:
        pytest.skip(str(exc))
    linears = _linears(sm, linear)
    x = torch.randn(rows, linears[0].tensors()[0].shape[-1], device=device, dtype=sm.embed.dtype)
    calls, nbytes, first = _calls(gemv_kernel, linear, linears, x)
    graph = _graph(calls)

    def replays() -> None:
        for _ in range(REPLAYS):
            graph.replay()
        torch.cuda.synchronize()

    benchmark.group = f"decode-gemv-{linear}"
    benchmark.pedantic(replays, setup=torch.cuda.synchronize, rounds=5, warmup_rounds=1, iterations=1)
    per_call = benchmark.stats.stats.min / REPLAYS / len(calls)
    peak = roofline.device_peaks(device).bandwidth
    context = {"linear": linear, "gemv_kernel": gemv_kernel, "rows": rows, "weight_bytes": nbytes}
    metrics.record("gemv_time", per_call, "s", **context)
    metrics.record("gemv_bandwidth", roofline.utilisation(nbytes, per_call, peak), "%", **context)
    benchmark.extra_info.update(context, per_call_s=per_call)
    if gemv_kernel.startswith("triton"):  # a launch config is worth timing only if it computes the product
        _assert_matches_cublas(linear, linears[0], x, calls[0]())
    elif gemv_kernel.startswith("marlin"):  # and a repacking only if it holds the grid's weights
        from pytest_attnlab.paths.fast_weights import Dense

        dequantized = Dense(first.reference().to(x.dtype), first.bias)
        _assert_matches_cublas(linear, dequantized, x, calls[0]())


def _assert_matches_cublas(name: str, linear: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """The kernel's output of the first layer, after its graph's replays (split-K's counters must be back at 0
    by then), against cuBLAS's over `linear` within bfloat16's rounding of outputs of that size."""
    (ref,) = (call() for call in _calls("cublas", name, [linear], x)[0])
    scale = ref.float().abs().amax().item()
    torch.testing.assert_close(y.float(), ref.float(), atol=1e-2 * scale, rtol=2**-7)
