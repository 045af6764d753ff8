"""GPTQ through gptqmodel (ModelCloud), run in a subprocess, its checkpoint converted to a QuantState.

gptqmodel quantizes on CPU (GPTQMODEL_CPU_WORKERS=2 on a 2-core machine; about 75 s for
SmolLM2-135M). It runs in a child process because importing it changes process-wide settings
(PYTORCH_ALLOC_CONF, CUDA_DEVICE_ORDER, loggers). Its packed GPTQ checkpoint is then unpacked
exactly into the harness's int4 storage (integer zero points, float16 scales), which the cache
keeps; gptqmodel's own CPU loader is not used at run time (it took 136 s to load here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from pytest_attnlab import progress
from pytest_attnlab.models import embedded
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.quant.base import QuantContext
from pytest_attnlab.quant.grid import Grid, QTensor
from pytest_attnlab.quant.layers import target_linears
from pytest_attnlab.quant.packed import QuantState
from pytest_attnlab.quant.state_quantizer import StateQuantizer


def unpack_gptq(tensors: dict[str, torch.Tensor], group_size: int, checkpoint_format: str = "gptq") -> QTensor:
    """GPTQ packing (qweight [in/8, out] int32, qzeros [groups, out/8] int32, scales [groups, out])
    -> codes [out, in], scales/zeros [out, groups]. The v1 "gptq" format stores zero points minus one."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    qweight = tensors["qweight"]
    codes = ((qweight[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(-1, qweight.shape[1])  # [in, out]
    qzeros = tensors["qzeros"]
    zeros = ((qzeros[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(qzeros.shape[0], -1)  # [groups, out]
    if checkpoint_format == "gptq":
        zeros = zeros + 1
    cols = codes.shape[0]
    g_idx = tensors.get("g_idx")
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(cols) // group_size):
        raise ValueError("GPTQ checkpoint uses act-order (g_idx is not contiguous); not supported by the converter")
    out = codes.shape[1]
    return QTensor(codes.t().contiguous().to(torch.uint8), tensors["scales"].t().float()[:out], zeros.t().float()[:out])


class GPTQModelQuantizer(StateQuantizer):
    extra = "gptq"
    modules = ("gptqmodel",)
    calibrated = True
    modifies_model = False

    def __init__(self, name: str, bits: int = 4, group_size: int = 128, sym: bool = True, desc_act: bool = False):
        super().__init__("fake")
        if bits != 4:
            raise ValueError(f"GPTQModelQuantizer.bits: {bits} is not supported by the converter; choose from: 4")
        self.name, self.bits, self.group_size, self.sym, self.desc_act = name, bits, group_size, sym, desc_act

    def settings(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "method": "gptq",
            "backend": f"gptqmodel {version('gptqmodel')}",
            "bits": self.bits,
            "group_size": self.group_size,
            "sym": self.sym,
            "desc_act": self.desc_act,
        }

    def make_state(self, model: Any, ctx: QuantContext) -> QuantState:
        from safetensors.torch import load_file

        with tempfile.TemporaryDirectory(prefix="attnlab-gptq-") as tmp:
            src = _checkpoint_folder(model, ctx, Path(tmp) / "src")
            out = Path(tmp) / "out"
            calib = Path(tmp) / "calibration.json"
            calib.write_text(json.dumps(ctx.calibration().tolist()))
            cfg = {
                "bits": self.bits,
                "group_size": self.group_size,
                "sym": self.sym,
                "desc_act": self.desc_act,
            }
            env = {**os.environ, "GPTQMODEL_CPU_WORKERS": os.environ.get("GPTQMODEL_CPU_WORKERS", "2")}
            cmd = [
                sys.executable,
                "-m",
                "pytest_attnlab.quant.gptq_worker",
                str(src),
                str(out),
                str(calib),
                json.dumps(cfg),
            ]
            with progress.step(f"quantize {self.name}", total=len(decoder_layers(model)), unit="layer") as p:
                returncode, stderr = _run_worker(cmd, env, Path(tmp), p)
            if returncode:
                raise RuntimeError(f"gptqmodel failed (exit {returncode}):\n{stderr[-3000:]}")
            tensors = load_file(str(out / "model.safetensors"))
            fmt = json.loads((out / "quantize_config.json").read_text()).get("checkpoint_format", "gptq")
        grid = Grid(4, self.group_size, symmetric=False, zero="int")
        state = QuantState(grid, info={"method": "gptq", "backend": self.settings()["backend"]})
        for name, linear in target_linears(model).items():
            parts = {
                k: tensors[f"{name}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx") if f"{name}.{k}" in tensors
            }
            state.add_linear(name, linear.weight.detach(), unpack_gptq(parts, self.group_size, fmt))
        return state


def _run_worker(cmd: list[str], env: dict[str, str], tmp: Path, p: progress.Step) -> tuple[int, str]:
    """Run gptq_worker in `tmp` (gptqmodel writes a logs/ folder into its working directory); it
    writes the index of each decoder layer it starts on a pipe, which advances `p`. Its stderr goes
    to a file, so no pipe fills up while this one is read. Returns (exit status, stderr)."""
    read_fd, write_fd = os.pipe()
    with open(tmp / "worker.stderr", "w+") as err:
        try:
            proc = subprocess.Popen(
                [*cmd, str(write_fd)],
                env=env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)  # the child's copy is the only writer left: EOF when it exits
        with os.fdopen(read_fd) as layers:
            for line in layers:
                if line.strip().isdigit():
                    p.update(int(line))  # layer i started: i layers done
        returncode = proc.wait()
        if returncode == 0 and p.total is not None:
            p.update(p.total)
        err.seek(0)
        return returncode, err.read()


def _checkpoint_folder(model: Any, ctx: QuantContext, dest: Path) -> Path:
    """A save_pretrained folder of the model: the embedded cache or the user's folder as they are,
    anything else (random shapes) saved to `dest`."""
    spec = ctx.spec
    if spec is not None and spec.source == "embedded":
        return embedded.checkpoint()
    if spec is not None and spec.source == "local":
        return Path(spec.ref)
    model.save_pretrained(dest)
    ctx.tokenizer.save_pretrained(dest)
    return dest
