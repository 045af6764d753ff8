"""Backends: the same correctness and perf tests through HF `generate`, the fast path, or vLLM.

The backend names are perf's decode paths (`pytest_attnlab.perf.paths.DECODE_PATHS`); this package
adds `vllm` (`VLLMPath`, registered by `backends/plugin.py`), the vLLM engine settings and holder,
and `scoring.greedy_logprobs` (greedy tokens + top-k logprobs per backend). See docs/backends.md.
"""

from pytest_attnlab.backends.engine import INSTALL_HINT, EngineHolder, EngineSettings, VLLMUnavailable
from pytest_attnlab.backends.scored import Scored

__all__ = ["INSTALL_HINT", "EngineHolder", "EngineSettings", "Scored", "VLLMUnavailable"]
