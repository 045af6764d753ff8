"""The decode-step profile (perf.profile_step, --attnlab-perf-profile-steps): the kernel classes by name,
the per-step breakdown, the fast path's step loop, and the suite's rows on CPU (on, off, bad values)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_attnlab.metrics.recorder import MetricRecorder
from pytest_attnlab.perf import profile_step as ps

ROOT = Path(__file__).resolve().parents[1]

#: kernel and op names as CUPTI and the CPU profiler report them, and the class each must land in
NAMES = {
    # GPU: cuBLAS, cuBLASLt, CUTLASS-backed, tinygemm, inductor's mm template
    "void gemv2T_kernel_val<int, int, __nv_bfloat16, __nv_bfloat16, float, 128, 16, 4, 4, false, false, "
    "cublasGemvParamsEx<int, cublasGemvTensorStridedBatched<__nv_bfloat16 const> > >(float, float)": "gemv",
    "nvjet_tst_64x8_64x16_4x1_v_bz_splitK_TNT": "gemv",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_execute_segment_k_off": "gemv",
    "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16>(...)": "gemv",
    "void at::native::tinygemm_m16n8k16_chunk_kernel<(at::native::KReductionType)0, 8, 8, 2, 8>(...)": "gemv",
    "triton_tem_fused_mm_4": "gemv",
    # GPU: fused attention (flash's traits name cutlass: the attention rule comes first), softmax
    "void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, "
    "cutlass::bfloat16_t> >(Flash_fwd_params)": "attention",
    "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)": "attention",
    "void (anonymous namespace)::softmax_warp_forward<c10::BFloat16, float, float, 10, false, false>(...)": "attention",
    "triton_per_fused__softmax_add_mul_3": "attention",
    # GPU: inductor kernels that only copy or cast, and the ones that fuse a cast into a norm
    "triton_poi_fused__to_copy_0": "copy",
    "triton_poi_fused_cat_clone_2": "copy",
    "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_1": "elementwise",
    "triton_poi_fused_add_cat_mul_neg_5": "elementwise",
    # GPU: eager copies and elementwise kernels
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::direct_copy_kernel_cuda("
    "at::TensorIteratorBase&)::{lambda()#3}, std::array<char*, 2ul> >(int, ...)": "copy",
    "void at::native::(anonymous namespace)::CatArrayBatchedCopy<OpaqueType<2u>, unsigned int, 4, 64, 64>": "copy",
    "Memcpy DtoD (Device -> Device)": "copy",
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, "
    "std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, std::array<char*, 3ul>)": "elementwise",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, MeanOps<float, float> > >": "elementwise",
    # GPU: the plugin's Triton kernels, and inductor kernels named after a GEMV custom op they feed (H200 run)
    "_gemv_dense_kernel": "gemv",
    "_decode_chunk_kernel": "attention",
    "_decode_combine_kernel": "attention",
    "triton_red_fused__to_copy_add_gemv_dense_mean_mul_pow_rsqrt_10": "elementwise",
    "triton_red_fused__to_copy_add_gemv_silu_mul_mean_mul_pow_rsqrt_9": "elementwise",
    # CPU: aten ops
    "aten::bmm": "attention",
    "aten::_softmax": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::mm": "gemv",
    "marlin::Marlin<1125899906909960l, 1125899906843648l, 128, 1, 4, 8, true>": "gemv",
    "triton_red_fused__to_copy_add_marlin_gemm_mean_mul_pow_rsqrt_view_5": "elementwise",  # an RMSNorm feeding it
    "triton_poi_fused_marlin_gemm_mul_silu_split_view_6": "elementwise",
    "aten::addmm": "gemv",
    "aten::matmul": "gemv",
    "aten::_weight_int4pack_mm_for_cpu": "gemv",
    "aten::copy_": "copy",
    "aten::_to_copy": "copy",
    "aten::index_copy_": "copy",
    "aten::cat": "copy",
    "aten::to": "copy",
    "aten::mul": "elementwise",
    "aten::rsqrt": "elementwise",
    "aten::silu": "elementwise",
    "aten::argmax": "elementwise",
    "aten::embedding": "elementwise",
    "aten::view": "other",
    "aten::as_strided": "other",
    "aten::expand": "other",
    "aten::transpose": "other",
    "## Call CompiledFxGraph fpbq6xebbq7ngtk3j2s4uxweu7nrbo267hswxfjvxrl72ljzlstg ##": "elementwise",
    "Torch-Compiled Region: 0/0": "other",
    "TorchDynamo Cache Lookup": "other",
}


@pytest.mark.parametrize("name, kind", NAMES.items(), ids=[n[:48] for n in NAMES])
def test_classify(name, kind):
    assert ps.classify(name) == kind


def test_every_rule_names_a_known_class():
    assert {c for c, _ in ps.KERNEL_CLASSES} | {ps.OTHER} == set(ps.CLASSES)
    assert set(NAMES.values()) == set(ps.CLASSES)  # every class is exercised above


def test_breakdown_per_step_shares_and_top():
    acts = [("aten::mm", 0.004), ("aten::mm", 0.002), ("aten::bmm", 0.001), ("aten::view", 0.001)] * 2  # 2 steps
    acts += [(f"aten::op{i}", 1e-6) for i in range(12)]
    b = ps.breakdown(acts, steps=2, wall_s=0.018, traced_wall_s=0.02)
    assert (b.wall_s, b.traced_wall_s) == (pytest.approx(0.009), pytest.approx(0.01))
    assert b.kernel_s == pytest.approx(0.008 + 6e-6)
    assert b.busy == pytest.approx(b.kernel_s / 0.01)  # over the span the kernels were traced in
    assert b.kernel_count == pytest.approx(4 + 6)
    assert sum(b.shares.values()) == pytest.approx(1.0)
    assert b.shares["gemv"] == pytest.approx(0.006 / b.kernel_s)
    first = b.top[0]
    assert len(b.top) == ps.TOP and (first.name, first.kind, first.calls) == ("aten::mm", "gemv", 2.0)
    assert first.seconds == pytest.approx(0.006)
    assert [k.seconds for k in b.top] == sorted((k.seconds for k in b.top), reverse=True)


def test_gpu_activities_are_device_kernels_without_sync_markers():
    """What a CUDA-graph replay's trace holds: the launch (a host event), kernels, a memcpy, a sync marker."""
    from types import SimpleNamespace as Event

    from torch.autograd import DeviceType

    events = [
        Event(name="cudaGraphLaunch", device_type=DeviceType.CPU, is_async=False, self_cpu_time_total=9.0),
        Event(name="gemv2T_kernel_val", device_type=DeviceType.CUDA, device_time_total=12.0),
        Event(name="Memcpy DtoD (Device -> Device)", device_type=DeviceType.CUDA, device_time_total=1.0),
        Event(name="Context Sync", device_type=DeviceType.CUDA, device_time_total=500.0),
    ]
    prof = Event(events=lambda: events)
    got = ps._activities(prof, cuda=True)
    assert got == [("gemv2T_kernel_val", pytest.approx(12e-6)), ("Memcpy DtoD (Device -> Device)", pytest.approx(1e-6))]
    assert ps._activities(prof, cuda=False) == [("cudaGraphLaunch", pytest.approx(9e-6))]


def test_no_kernels_records_the_wall_times_and_a_note_not_zeros():
    b = ps.breakdown([], steps=4, wall_s=0.008, traced_wall_s=0.009, note=ps.NO_KERNELS)
    assert b.wall_s == pytest.approx(0.002) and math.isnan(b.kernel_s) and b.note == ps.NO_KERNELS
    rec = MetricRecorder("t::x", sink=lambda row: None)
    ps.record(b, rec, batch=1)
    assert [r.metric for r in rec.rows] == ["profile_step_wall", "profile_traced_wall"]
    assert {r.context["profile_note"] for r in rec.rows} == {ps.NO_KERNELS}
    assert not rec.tables


def test_record_rows_and_table():
    acts = [("aten::mm", 0.003), ("aten::_softmax", 0.001), ("void " + "k" * 300, 0.0005)]
    rec = MetricRecorder("t::x", sink=lambda row: None)
    ps.record(ps.breakdown(acts, steps=1, wall_s=0.004, traced_wall_s=0.005), rec, batch=1, prompt_len=8)
    by_metric = {r.metric: r for r in rec.rows}
    assert by_metric["profile_busy"].value == pytest.approx(0.9)
    assert by_metric["profile_share_attention"].value == pytest.approx(1 / 4.5)
    assert "profile_note" not in by_metric["profile_busy"].context
    top = [r for r in rec.rows if r.metric == "profile_top_kernel"]
    assert [r.context["rank"] for r in top] == [1, 2, 3] and top[0].context["kernel"] == "aten::mm"
    assert len(top[2].context["kernel"]) == ps.NAME_WIDTH and not top[2].context["kernel"].startswith("void")
    (table,) = rec.tables
    assert table.columns == ["rank", "kernel", "class", "calls/step", "us/step", "share"]
    assert table.rows[0] == [1, "aten::mm", "gemv", "1", "3000.0", "66.7%"]


def test_step_loop_runs_the_timed_step_past_the_cache_length():
    """The profiled loop is the generation's own step: its first tokens are generate's; positions
    cycle, so more calls than the cache holds still run."""
    from pytest_attnlab.models import random_models
    from pytest_attnlab.paths import FastPath, PathOptions

    model = random_models.build("tiny-qwen2", dtype=torch.float32, attn_implementation="sdpa")
    ids = torch.randint(16, 4000, (1, 10), generator=torch.Generator().manual_seed(1))
    path = FastPath(PathOptions())
    path.prepare(model, 1, 10, 5)
    want = path.generate(ids, 5, lambda: None)
    step = path.step_loop(ids)
    assert torch.equal(torch.cat([step() for _ in range(4)], dim=1), want[:, 1:])
    for _ in range(path.cache.max_len):  # past the cache's 64 positions
        step()
    b = ps.profile(path.step_loop(ids), 3, "cpu")
    assert b.kernel_count > 0 and 0 < b.busy <= 1.0 + 1e-6


# -- the suite with the option, on CPU -------------------------------------------------------------


def _suite(out: Path, *args: str) -> list[dict[str, str]]:
    suite = str(ROOT / "suites" / "perf" / "test_fast_path.py")
    cmd = [sys.executable, "-m", "pytest", suite, "-k", "test_fast_variant", "-q", "-p", "no:cacheprovider",
           "--attnlab-model", "random:tiny-qwen2", "--attnlab-perf-prompt-lens", "16", "--attnlab-perf-new-tokens", "4",
           "--attnlab-perf-rounds", "1", "--attnlab-report-dir", str(out), *args]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    return list(csv.DictReader(open(out / "metrics.csv", newline="", encoding="utf-8")))


def test_suite_records_the_profile_rows_and_the_table_prints_them(tmp_path):
    out = tmp_path / "reports"
    rows = _suite(out, "--attnlab-perf-profile-steps", "3")
    got = {r["metric"]: float(r["value"]) for r in rows if r["metric"].startswith("profile_")}
    shares = [got[f"profile_share_{c}"] for c in ps.CLASSES]
    assert sum(shares) == pytest.approx(1.0, abs=1e-6) and min(shares) >= 0
    assert got["profile_kernel_count"] > 0 and got["profile_step_wall"] > 0 and got["profile_traced_wall"] > 0
    assert 0 < got["profile_busy"] <= 1.0 + 1e-6
    top = [r for r in rows if r["metric"] == "profile_top_kernel"]
    assert 0 < len(top) <= ps.TOP and all(r["backend"] == "fast" and '"profile_steps": 3' in r["extra"] for r in top)
    assert "kernels per decode step (3 steps profiled)" in (out / "report.html").read_text()
    table = subprocess.run(
        [sys.executable, "-m", "pytest_attnlab", "table", str(out), "-m", "profile_share_gemv,profile_kernel_count",
         "--by", "compile,batch"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0] == "| compile | batch | profile_share_gemv | profile_kernel_count |"
    assert table.stdout.splitlines()[2].startswith("| none | 1 | 0.")


def test_suite_without_the_option_records_no_profile_rows(tmp_path):
    rows = _suite(tmp_path / "reports", "-p", "no:html")
    assert {r["metric"] for r in rows} >= {"tpot", "convert_s"}
    assert not [r for r in rows if r["metric"].startswith("profile_")]


@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "*--attnlab-perf-profile-steps: -1 must be >= 0*"),
        ("some", "*--attnlab-perf-profile-steps: expected a whole number of steps (0: off), got 'some'*"),
    ],
)
def test_bad_profile_steps_are_usage_errors(pytester, value, message):
    result = pytester.runpytest("--attnlab-perf-profile-steps", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_help_and_ini_key(pytester):
    help_lines = ["*--attnlab-perf-profile-steps=N*", "*attnlab_perf_profile_steps*"]
    pytester.runpytest("--help").stdout.fnmatch_lines(help_lines)
    pytester.makeini("[pytest]\nattnlab_perf_profile_steps = 7\n")
    pytester.makepyfile(test_s="def test_s(perf_settings):\n    assert perf_settings.profile_steps == 7\n")
    pytester.runpytest().assert_outcomes(passed=1)
