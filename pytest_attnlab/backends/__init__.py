"""Backends: the same correctness and perf tests through HF `generate`, the fast path, or vLLM.

The backend names are the decode paths (`pytest_attnlab.paths.DECODE_PATHS`: hf, fast, vllm, and the
vLLM engine, quantizer routes and scoring beside them); this package holds `--attnlab-backend` and
`--attnlab-vllm-*` and the fixtures over them. See docs/backends.md.
"""
