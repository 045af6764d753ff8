"""Child process for gptq.py: `python -m pytest_attnlab.quant.gptq_worker SRC OUT CALIB.json CONFIG.json [FD]`.

Quantizes the save_pretrained folder SRC with gptqmodel on CPU and saves the GPTQ checkpoint to OUT.
With FD (a pipe from the parent), writes the index of each decoder layer when it first runs, one per
line: gptqmodel quantizes layer by layer, so the parent can show "layer k of n".
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext


@contextmanager
def report_layers(fd: int) -> Iterator[None]:
    """Write each decoder layer's index to `fd` the first time a later layer than before runs forward.

    A process-wide forward pre-hook, keyed on the class name and `self_attn.layer_idx` (HF Llama and
    Qwen2 layers) rather than on module objects, which gptqmodel may replace while it works; if none
    fires, the parent's step just goes from 0 to n at the end."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    last = -1

    def hook(module: object, args: object) -> None:
        nonlocal last
        if not type(module).__name__.endswith("DecoderLayer"):
            return
        idx = getattr(getattr(module, "self_attn", None), "layer_idx", None)
        if isinstance(idx, int) and idx > last:
            last = idx
            os.write(fd, f"{idx}\n".encode())

    handle = register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        os.close(fd)


def main(src: str, out: str, calib_path: str, config: str, progress_fd: str | None = None) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("GPTQMODEL_CPU_WORKERS", "2")))
    from gptqmodel import GPTQModel, QuantizeConfig

    cfg = json.loads(config)
    ids = json.load(open(calib_path))
    calibration = [{"input_ids": row, "attention_mask": [1] * len(row)} for row in ids]
    model = GPTQModel.load(src, QuantizeConfig(**cfg), device="cpu")
    with report_layers(int(progress_fd)) if progress_fd else nullcontext():
        model.quantize(calibration, batch_size=1)
    model.save(out)


if __name__ == "__main__":
    main(*sys.argv[1:6])
