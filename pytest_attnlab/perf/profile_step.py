"""Where a decode step's time goes: N steps under torch.profiler, each kernel sorted into a class by name.

Opt-in (`--attnlab-perf-profile-steps N`): suites/perf/test_fast_path.py::test_fast_variant profiles, after
its timed rounds, the step callable the timing used (the CUDA-graph replay on GPU, the eager or compiled
step on CPU) and records per step: wall time (untraced, and under the profiler), kernel time, busy share
(kernel / traced wall: what launch gaps and host work leave idle), kernel count, each class's share of the
kernel time, and the top kernels. The two walls show what tracing itself costs: next to nothing for a graph
replay's one launch, a few microseconds per op on CPU, where op times carry it too.

"Kernels" are CUPTI's device activities on GPU (kernels, memcpy, memset), timed on the device; on CPU they
are the profiler's ops (aten ops and annotations), each with its self time, so nested ops count once.
Inside a CUDA graph replay CUPTI links no kernel to the aten op that launched it at capture, so the class
comes from the kernel's name alone: there the math attention's batched matmuls run as cuBLAS GEMV/GEMM
kernels and count as `gemv` (the top-kernels table tells them apart by calls per step: 2 per layer against
the linears' 4, plus the lm_head's 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_attnlab.perf.timing import clock_for

#: Ordered rules, (class, regex searched case-insensitively in the kernel or op name): the first that matches
#: names the class; no match is OTHER. A class may have several rules, so a specific one can go first.
KERNEL_CLASSES: tuple[tuple[str, str], ...] = (
    # fused SDPA kernels, softmax, the math attention's bmm (named so on CPU and in inductor kernels)
    # and the plugin's split-KV Triton decode attention (_decode_chunk_kernel, _decode_combine_kernel)
    ("attention", r"softmax|scaled_dot_product|sdpa|flash|fmha|attention|bmm|^_decode_(chunk|combine)_kernel$"),
    # inductor kernels come before the GEMV rule: one is named after the ops it fuses, which may include a
    # GEMV custom op it feeds (triton_red_fused__to_copy_add_gemv_dense_mean_..._5 is an RMSNorm).
    # One that only copies or casts (triton_poi_fused__to_copy_0, ..._fused_cat_clone_1) is a copy; any
    # other pointwise, reduction or persistent-reduction kernel is elementwise (a template GEMM,
    # triton_tem_fused_mm_0, is left to the GEMV rule)
    ("copy", r"^triton_\w+?_fused(_+(to_copy|clone|cat|copy|index_copy))+_\d+$"),
    ("elementwise", r"^triton_(poi|red|per)_"),
    # cuBLAS / cuBLASLt (gemv*, *gemm*, nvjet*, splitKreduce), CUTLASS, int4 tinygemm, the plugin's Triton
    # GEMVs (_gemv_dense_kernel), vLLM's int4 Marlin and Machete (marlin::Marlin<...>), aten's matmul ops
    (
        "gemv",
        r"gemv|gemm|cublas|cutlass|nvjet|xmma|splitkreduce|int4pack|marlin|machete"
        r"|(^|::|_)(mm|addmm|linear|matmul)(_|$)",
    ),
    # any other inductor kernel fuses elementwise work: norms, RoPE, SiLU, residual adds, casts with them; on
    # CPU they go untraced, inside the compiled graph's call, whose self time is theirs (its mm ops are traced)
    ("elementwise", r"^triton_|^cpp_fused|CompiledFxGraph"),
    # copies and casts (direct_copy_kernel, aten::_to_copy), the KV-cache writes (index_copy), RoPE's cat
    ("copy", r"copy|clone|memcpy|memset|catarray|^aten::(cat|to|fill_|zero_|contiguous)$"),
    # eager elementwise and reduction kernels and ops: norms, RoPE, SiLU, adds, the embedding, the greedy argmax
    ("elementwise", r"elementwise|reduce_kernel|rsqrt|mean|pow|silu|neg|mul|add|sub|div|where|max|sum|index|embedding"),
)
OTHER = "other"  # views, allocations, compiled-region wrappers on CPU; unnamed kernels on GPU
CLASSES = tuple(dict.fromkeys([*(c for c, _ in KERNEL_CLASSES), OTHER]))
_RULES = [(c, re.compile(p, re.IGNORECASE)) for c, p in KERNEL_CLASSES]
#: top kernels recorded per profiled cell; kernel names are cut to this many characters in rows and tables
TOP = 10
NAME_WIDTH = 160
NO_KERNELS = "CUPTI reported no kernels inside the CUDA graph replay: kernel time, busy, shares not measured"


def classify(name: str) -> str:
    """The class of a kernel or op name: the first KERNEL_CLASSES rule that matches, else OTHER."""
    return next((c for c, rule in _RULES if rule.search(name)), OTHER)


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A kernel name for a table cell: without CUDA's `void ` and cut to `width` characters."""
    name = name.removeprefix("void ")
    return name if len(name) <= width else name[: width - 1] + "…"


@dataclass(frozen=True)
class Kernel:
    """One kernel (or op) name over the profiled steps, per step."""

    name: str
    kind: str  # its class
    seconds: float
    calls: float


@dataclass(frozen=True)
class Breakdown:
    """Per-step figures of `steps` profiled decode steps; `note` says what could not be measured."""

    steps: int
    wall_s: float  # the same loop untraced, just before: the step's own time
    traced_wall_s: float  # under the profiler: the span the kernels were recorded in
    kernel_s: float
    kernel_count: float
    shares: dict[str, float] = field(default_factory=dict)  # class -> share of the kernel time
    top: tuple[Kernel, ...] = ()
    note: str = ""

    @property
    def busy(self) -> float:
        """Kernel time over the traced wall time of the same steps: 1 is a device never idle between kernels."""
        return self.kernel_s / self.traced_wall_s if self.traced_wall_s > 0 else float("nan")


def breakdown(
    activities: Iterable[tuple[str, float]], steps: int, wall_s: float, traced_wall_s: float, note: str = ""
) -> Breakdown:
    """Per-step figures from (name, seconds) activities traced over `steps` steps that took `traced_wall_s`
    in all (`wall_s` untraced). No activities: the walls alone, with `note` saying why."""
    by_name: dict[str, list[float]] = {}
    for name, seconds in activities:
        by_name.setdefault(name, []).append(seconds)
    if not by_name:
        return Breakdown(steps, wall_s / steps, traced_wall_s / steps, float("nan"), 0, note=note)
    kernels = [Kernel(n, classify(n), sum(s) / steps, len(s) / steps) for n, s in by_name.items()]
    total = sum(k.seconds for k in kernels)
    shares = {c: sum(k.seconds for k in kernels if k.kind == c) / total if total else 0.0 for c in CLASSES}
    top = tuple(sorted(kernels, key=lambda k: -k.seconds)[:TOP])
    count = sum(k.calls for k in kernels)
    return Breakdown(steps, wall_s / steps, traced_wall_s / steps, total, count, shares, top)


def _activities(prof: Any, cuda: bool) -> list[tuple[str, float]]:
    """(name, seconds) of every kernel in a finished torch.profiler run: CUDA device activities on GPU,
    less CUPTI's sync markers ("Context Sync"; as torch._inductor.utils.do_bench_using_profiling reads
    them), CPU ops with their self time on CPU."""
    from torch.autograd import DeviceType

    out = []
    for e in prof.events():
        if cuda and e.device_type == DeviceType.CUDA and not e.name.endswith(" Sync"):
            out.append((e.name, e.device_time_total / 1e6))
        elif not cuda and e.device_type == DeviceType.CPU and not e.is_async:
            out.append((e.name, e.self_cpu_time_total / 1e6))
    return out


def _timed(step: Callable[[], Any], steps: int, device: str) -> float:
    """Seconds for `steps` calls of `step`, by the device's clock (synchronised at both ends)."""
    clock = clock_for(device, 1)
    clock.start()
    for _ in range(steps):
        step()
    clock.mark()
    return clock.stop()[0]


def profile(step: Callable[[], Any], steps: int, device: str) -> Breakdown:
    """Time `steps` calls of `step()`, then run as many under torch.profiler (CUDA activity on GPU,
    CPU activity on CPU), timed the same way."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.startswith("cuda")
    step()  # lazy initialisation (and a first replay) stays out of both
    wall = _timed(step, steps, device)
    with torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        traced = _timed(step, steps, device)  # synchronised: every kernel finishes inside the trace
    return breakdown(_activities(prof, cuda), steps, wall, traced, NO_KERNELS if cuda else "no profiler events")


def record(found: Breakdown, metrics: Any, **context: Any) -> None:
    """The breakdown as metric rows (profile_*), and its top kernels as a report table and as rows."""
    ctx = {**context, "profile_steps": found.steps, **({"profile_note": found.note} if found.note else {})}
    metrics.record("profile_step_wall", found.wall_s, "s", **ctx)
    metrics.record("profile_traced_wall", found.traced_wall_s, "s", **ctx)
    if found.note:  # nothing measured but the wall times: no zeros that would read as measured
        return
    metrics.record("profile_kernel_time", found.kernel_s, "s", **ctx)
    metrics.record("profile_busy", found.busy, "", **ctx)
    metrics.record("profile_kernel_count", found.kernel_count, "kernels", **ctx)
    for kind, share in found.shares.items():
        metrics.record(f"profile_share_{kind}", share, "", **ctx)
    rows = []
    for rank, k in enumerate(found.top, 1):
        name = short_name(k.name)
        metrics.record("profile_top_kernel", k.seconds, "s", rank=rank, kernel=name, kernel_class=k.kind,
                       calls_per_step=round(k.calls, 2), **ctx)  # fmt: skip
        rows.append({"rank": rank, "kernel": name, "class": k.kind, "calls/step": f"{k.calls:g}",
                     "us/step": f"{k.seconds * 1e6:.1f}", "share": f"{k.seconds / found.kernel_s:.1%}"})  # fmt: skip
    metrics.table(f"top {len(rows)} kernels per decode step ({found.steps} steps profiled)", rows)
