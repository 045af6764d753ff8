"""perf: LLM inference speed as pytest tests (TTFT, TPOT, tokens/s, MBU/MFU, device telemetry).

Fixtures `generation_benchmark` and `gpu_monitor` live in `plugin.py`; `roofline` computes the
bytes and FLOPs a step needs and the device's peaks; `paths` holds the decode paths (HF `generate`,
a static-KV CUDA-graph step). See docs/perf.md.
"""
