"""Child process for gptq.py: `python -m pytest_attnlab.quant.gptq_worker SRC OUT CALIB.json CONFIG.json`.

Quantizes the save_pretrained folder SRC with gptqmodel on CPU and saves the GPTQ checkpoint to OUT.
"""

from __future__ import annotations

import json
import sys


def main(src: str, out: str, calib_path: str, config: str) -> None:
    import torch

    torch.set_num_threads(int(__import__("os").environ.get("GPTQMODEL_CPU_WORKERS", "2")))
    from gptqmodel import GPTQModel, QuantizeConfig

    cfg = json.loads(config)
    ids = json.load(open(calib_path))
    calibration = [{"input_ids": row, "attention_mask": [1] * len(row)} for row in ids]
    model = GPTQModel.load(src, QuantizeConfig(**cfg), device="cpu")
    model.quantize(calibration, batch_size=1)
    model.save(out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
