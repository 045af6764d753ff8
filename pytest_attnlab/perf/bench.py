"""The generation benchmark behind the `generation_benchmark` fixture.

One measurement = a decode path, a model, a (batch, prompt length, output length) cell: warmup
rounds, then timed rounds, each timestamping every token with the device's own clock. Timed rounds
go through pytest-benchmark's `benchmark.pedantic` (our rounds and warmup), so --benchmark-json /
--benchmark-compare work as usual; the LLM metrics land in `benchmark.extra_info` and metrics.csv.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_attnlab.models.loader import LoadedModel
from pytest_attnlab.perf import llm_metrics, memory, roofline
from pytest_attnlab.perf import slo as slo_
from pytest_attnlab.perf.llm_metrics import Run, Summary
from pytest_attnlab.perf.plant import PlantedSlowdown
from pytest_attnlab.perf.timing import clock_for, synchronize

if TYPE_CHECKING:
    from pytest_attnlab.paths import DecodePath

#: extra_info keys: latencies in ms (as vLLM prints them), throughputs in tokens/s, MBU/MFU in %.
_MS = ("ttft", "tpot", "e2e_latency", "itl_p50", "itl_p90", "itl_p99", "itl_max")


def _unwrap(loaded: Any) -> Any:
    """The torch model of a LoadedModel, or the model itself (a CausalLM also has `.model`)."""
    return loaded.model if isinstance(loaded, LoadedModel) else loaded


def make_prompt(vocab: int, batch: int, prompt_len: int, device: Any, seed: int = 0) -> Any:
    """Deterministic token ids [batch, prompt_len], clear of the low special-token ids."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(16, max(17, min(vocab, 32000)), (batch, prompt_len), generator=gen)
    return ids.to(device)


@dataclass
class Measurement:
    path: str
    batch: int
    prompt_len: int
    new_tokens: int
    runs: list[Run]
    tokens: Any  # [batch, new_tokens] of the last round
    peaks: roofline.DevicePeaks
    memory: dict[str, tuple[float, str]] = field(default_factory=dict)
    shape: roofline.Shape | None = None
    weight_bytes: int = 0
    elem_bytes: int = 2
    #: how the path ran the cell, where it says (DecodePath.describe: vLLM's route and kernels)
    path_info: dict[str, str] = field(default_factory=dict)
    #: --attnlab-perf-slo: with objectives, goodput (requests and tokens per second) joins the metrics
    slo: slo_.Slo = ()

    def latency(self) -> dict[str, float]:
        return Summary(self.runs).as_dict()

    def samples(self) -> dict[str, list[float]]:
        """Per-round values of the latency and throughput metrics (SI units)."""
        return Summary(self.runs).per_round()

    def roofline(self) -> dict[str, tuple[float, str]]:
        lat = self.latency()
        assert self.shape is not None
        ctx = roofline.mean_decode_context(self.prompt_len, self.new_tokens)
        step_bytes = roofline.decode_step_bytes(self.weight_bytes, self.shape, self.batch, ctx, self.elem_bytes)
        flops = self.shape.prefill_flops(self.batch, self.prompt_len)
        tpot, ttft = lat["tpot"], lat["ttft"]
        return {
            "decode_step_bytes": (step_bytes, "bytes"),
            "decode_bandwidth": (step_bytes / tpot if tpot and not math.isnan(tpot) else math.nan, "bytes/s"),
            "mbu": (roofline.utilisation(step_bytes, tpot, self.peaks.bandwidth), "%"),
            "prefill_flops": (flops, "FLOP"),
            "mfu": (roofline.utilisation(flops, ttft, self.peaks.flops), "%"),
            "peak_bandwidth": (self.peaks.bandwidth, "bytes/s"),
            "peak_flops": (self.peaks.flops, "FLOP/s"),
        }

    def all_metrics(self) -> dict[str, tuple[float, str]]:
        """Every figure as name -> (value, unit), in SI units: the metrics.csv rows."""
        out = {k: (v, llm_metrics.UNITS[k]) for k, v in self.latency().items()}
        out.update(self.roofline())
        out.update(self.memory)
        out["peak_mem"] = (memory.peak_bytes(self.device, self.memory), "bytes")
        if self.slo:
            out.update(slo_.goodput(self.runs, self.slo))
        return out

    @property
    def device(self) -> str:
        return str(self.tokens.device) if self.tokens is not None else "cpu"

    def extra_info(self) -> dict[str, Any]:
        """pytest-benchmark extra_info: readable units (ms, tok/s, %), plus the cell's settings."""
        info: dict[str, Any] = {
            "path": self.path,
            "batch": self.batch,
            "prompt_len": self.prompt_len,
            "new_tokens": self.new_tokens,
            "rounds": len(self.runs),
            **({"slo": slo_.describe(self.slo)} if self.slo else {}),
            **self.path_info,
            # per-round values, same names and units as the scalars below: the compare gate's samples
            "samples": {
                (f"{k}_ms" if k in _MS else k): [x * 1e3 if k in _MS else x for x in xs]
                for k, xs in self.samples().items()
            },
        }
        for name, (value, unit) in self.all_metrics().items():
            if name in _MS:
                info[f"{name}_ms"] = value * 1e3
            elif unit == "%":
                info[f"{name}_pct"] = value
            elif name.endswith(("_tok_s", "_req_s")):
                info[name] = value
            else:
                info[f"{name}_{unit.replace('/', '_per_')}".replace("FLOP_per_s", "flop_s")] = value
        return info


class GenerationBenchmark:
    """Callable fixture object: `generation_benchmark(loaded, prompt_len=128, batch=1, new_tokens=32,
    path="fast")` runs the cell through pytest-benchmark and records every metric; `measure(...)`
    does the same without pytest-benchmark (for comparisons inside one test)."""

    def __init__(
        self,
        *,
        device: str,
        rounds: int,
        warmup: int,
        path_factory: Callable[[str], DecodePath],
        peaks: Callable[[], roofline.DevicePeaks],
        benchmark: Any = None,
        recorder: Any = None,
        attention: Callable[[Any, str], Any] | None = None,
        plant_slowdown: float = 0.0,
        slo: slo_.Slo = (),
    ) -> None:
        self.device = device
        self.slo = slo
        self.plant = PlantedSlowdown(plant_slowdown, device) if plant_slowdown > 0 else None
        self.rounds, self.warmup = rounds, warmup
        self.path_factory = path_factory
        self.peaks = peaks
        self.benchmark = benchmark
        self.recorder = recorder
        self.attention = attention
        self.last: Measurement | None = None

    def _cell(self, loaded: Any, path: str, batch: int, prompt_len: int, new_tokens: int) -> tuple[Any, Any, Any]:
        model = _unwrap(loaded)
        if self.plant:
            self.plant.step_s = None  # a new cell: its first (warmup) round measures the step again
        impl = self.path_factory(path)
        impl.prepare(model, batch, prompt_len, new_tokens)
        ids = make_prompt(model.config.vocab_size, batch, prompt_len, self.device)
        return model, impl, ids

    def _measurement(
        self,
        model: Any,
        path: str,
        impl: DecodePath,
        batch: int,
        prompt_len: int,
        new_tokens: int,
        runs: list[Run],
        tokens: Any,
    ) -> Measurement:
        shape = roofline.Shape.from_config(model.config)
        # A path that runs its own copy of the weights (vLLM: its checkpoint at its dtype, packed int4)
        # says what one decode step reads (DecodePath.weights_read); else the HF model's parameters.
        own = impl.weights_read(shape, batch)
        if own is not None:
            weights, elem = own
        else:
            elem = next(model.parameters()).element_size()
            weights = roofline.weight_bytes_per_step(model, shape, batch, elem)
        m = Measurement(
            path,
            batch,
            prompt_len,
            new_tokens,
            runs,
            tokens,
            self.peaks(),
            memory.read(self.device),
            shape,
            weights,
            elem,
            impl.describe(),
            self.slo,
        )
        self.last = m
        return m

    def _round(self, impl: DecodePath, ids: Any, new_tokens: int, runs: list[Run], out: list[Any]) -> None:
        clock = clock_for(self.device, new_tokens)
        mark = self.plant.wrap(clock.mark) if self.plant else clock.mark
        clock.start()
        out[:] = [impl.generate(ids, new_tokens, mark)]
        marks = clock.stop()
        if len(marks) != new_tokens:
            raise RuntimeError(f"{impl.name}: expected {new_tokens} token marks, got {len(marks)}")
        run = Run(ids.shape[0], ids.shape[1], tuple(marks))
        if self.plant:
            self.plant.observe(run)
        runs.append(run)

    def measure(self, loaded: Any, **cell: Any) -> Measurement:
        """`__call__`'s cell (prompt_len=, batch=, new_tokens=, path=, rounds=, warmup=, attention=) measured
        without pytest-benchmark: no group, extra_info or metrics rows."""

        def loop(fn: Any, args: tuple, rounds: int, warmup: int) -> None:
            for _ in range(warmup + rounds):
                fn(*args)

        return self._measure(loop, loaded, **cell)

    def _measure(self, repeat: Any, loaded: Any, *, prompt_len: int, batch: int = 1, new_tokens: int = 32,
                 path: str = "hf", rounds: int | None = None, warmup: int | None = None,
                 attention: str = "sdpa") -> Measurement:  # fmt: skip
        """One cell: `repeat(round, args, rounds, warmup)` runs the warmup rounds, then the timed ones."""
        rounds = self.rounds if rounds is None else rounds
        warmup = self.warmup if warmup is None else warmup
        with self._attention(loaded, attention):
            model, impl, ids = self._cell(loaded, path, batch, prompt_len, new_tokens)
            runs: list[Run] = []
            out: list[Any] = [None]
            memory.reset(self.device)
            repeat(self._round, (impl, ids, new_tokens, runs, out), rounds, warmup)
            synchronize(self.device)
        return self._measurement(model, path, impl, batch, prompt_len, new_tokens, runs[-rounds:], out[0])

    def __call__(
        self,
        loaded: Any,
        *,
        prompt_len: int,
        batch: int = 1,
        new_tokens: int = 32,
        path: str = "hf",
        rounds: int | None = None,
        warmup: int | None = None,
        attention: str = "sdpa",
        **context: Any,
    ) -> Measurement:
        if self.benchmark is None:
            raise RuntimeError("generation_benchmark needs pytest-benchmark: pip install pytest-benchmark")
        self.benchmark.group = f"{context.get('group', '')}p{prompt_len}-b{batch}-n{new_tokens}"

        def pedantic(fn: Any, args: tuple, rounds: int, warmup: int) -> None:  # warmup rounds come first
            self.benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)

        cell = {"batch": batch, "new_tokens": new_tokens, "path": path, "attention": attention}
        m = self._measure(pedantic, loaded, prompt_len=prompt_len, rounds=rounds, warmup=warmup, **cell)
        info = m.extra_info()
        overhead = self._timer_overhead(m)
        if overhead is not None:
            info["timer_overhead_pct"] = overhead
        self.benchmark.extra_info.update({**info, **{k: str(v) for k, v in context.items()}})
        if self.recorder is not None:
            self.record(m, overhead=overhead, **context)
        return m

    def _timer_overhead(self, m: Measurement) -> float | None:
        """pytest-benchmark's host-timed round vs the device-clock E2E of the same rounds, in %."""
        stats = getattr(getattr(self.benchmark, "stats", None), "stats", None)
        if stats is None:
            return None
        e2e = m.latency()["e2e_latency"]
        return 100.0 * (stats.mean - e2e) / e2e

    def record(self, m: Measurement, *, overhead: float | None = None, **context: Any) -> None:
        rec = self.recorder
        rec.update_context(backend=m.path)
        cell = {"batch": m.batch, "prompt_len": m.prompt_len, "new_tokens": m.new_tokens, **m.path_info, **context}
        if m.slo:
            cell["slo"] = slo_.describe(m.slo)
        samples = m.samples()
        for name, (value, unit) in m.all_metrics().items():
            rec.record(name, value, unit, samples=samples.get(name, ()), **cell)
        if overhead is not None:
            rec.record("timer_overhead", overhead, "%", **cell)

    @contextlib.contextmanager
    def _attention(self, loaded: Any, name: str) -> Any:
        if self.attention is None or name == "sdpa":
            yield
            return
        with self.attention(_unwrap(loaded), name):
            yield
