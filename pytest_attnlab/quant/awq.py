"""AWQ (Lin et al., 2023) in torch, following llm-awq's `run_awq` recipe on top of the RTN grid.

Per decoder layer, on the calibration activations of the (full-precision) previous layers:
1. scale search, per group of linears sharing an input: s = mean|x|^alpha (alpha on a 20-point
   grid in [0, 1), normalised by sqrt(max(s) * min(s))); the weights are quantized as Q(W * s) / s
   and the alpha whose block output (self_attn for q/k/v, mlp for gate/up, the linear itself for
   o_proj and down_proj) has the least MSE against the full-precision output wins;
2. the winning scales are folded into the previous op: input_layernorm (q/k/v),
   post_attention_layernorm (gate/up), v_proj rows (o_proj, only when shapes match: not with GQA,
   as in llm-awq), up_proj rows (down_proj);
3. clip search (llm-awq `auto_clip`): per output channel and group, the max |w| shrink in
   {1, 0.95, ..., 0.55} with the least output MSE on sampled tokens; q/k are not clipped;
4. the scaled, clipped weights are quantized with the integer zero-point int4 grid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pytest_attnlab import progress
from pytest_attnlab.probe import decoder_layers
from pytest_attnlab.quant.base import QuantContext
from pytest_attnlab.quant.grid import Grid
from pytest_attnlab.quant.layers import layer_inputs, layer_prefix, record_inputs, run_layer
from pytest_attnlab.quant.packed import QuantState
from pytest_attnlab.quant.state_quantizer import StateQuantizer

N_GRID = 20
MAX_SHRINK = 0.5
CLIP_TOKENS = 512
NO_CLIP = ("q_proj", "k_proj", "query", "key")


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def scale_groups(layer: nn.Module) -> list[dict[str, Any]]:
    """The (previous op, linears, inspected block) groups of a Llama/Qwen2-style decoder layer."""
    groups = []
    attn, mlp = _get(layer, "self_attn"), _get(layer, "mlp")
    q, k, v, o = (_get(layer, f"self_attn.{n}_proj") for n in "qkvo")
    if attn is not None and q is not None:
        groups.append(
            {
                "prev": layer.input_layernorm,
                "linears": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                "block": "self_attn",
            }
        )
    if v is not None and o is not None and v.weight.shape == o.weight.shape:
        groups.append({"prev": v, "linears": ["self_attn.o_proj"], "block": "self_attn.o_proj"})
    if mlp is not None and _get(layer, "mlp.gate_proj") is not None:
        groups.append(
            {
                "prev": layer.post_attention_layernorm,
                "linears": ["mlp.gate_proj", "mlp.up_proj"],
                "block": "mlp",
            }
        )
        groups.append({"prev": layer.mlp.up_proj, "linears": ["mlp.down_proj"], "block": "mlp.down_proj"})
    return groups


class AWQ(StateQuantizer):
    calibrated = True

    def __init__(self, name: str, group_size: int = 128, clip: bool = True) -> None:
        super().__init__("fake")
        self.name, self.bits, self.clip = name, 4, clip
        self.grid = Grid(4, group_size, symmetric=False, zero="int")

    def settings(self) -> dict[str, Any]:
        return {
            "method": "awq",
            "bits": 4,
            "group_size": self.grid.group_size,
            "zero": "int",
            "n_grid": N_GRID,
            "clip": self.clip,
            "backend": "pytest-attnlab torch",
        }

    @torch.no_grad()
    def make_state(self, model: Any, ctx: QuantContext) -> QuantState:
        device = next(model.parameters()).device
        inputs = layer_inputs(model, ctx.calibration().to(device))
        prefix = layer_prefix(model)
        scaled_ratios: dict[str, float] = {}
        layers = decoder_layers(model)
        with progress.step(f"quantize {self.name}", total=len(layers), unit="layer") as p:
            for i, layer in enumerate(layers):
                linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
                with record_inputs(linears) as feats:
                    next_hidden = run_layer(layer, inputs)
                feats = {n: torch.cat(v) for n, v in feats.items()}
                for group in scale_groups(layer):
                    ratio, scales = self._search(layer, group, feats, inputs.kwargs)
                    _fold(layer, group, scales)
                    for n in group["linears"]:
                        feats[n] = feats[n] / scales.to(feats[n].dtype)
                    scaled_ratios[f"{i}.{group['block']}"] = ratio
                if self.clip:
                    for n, linear in linears.items():
                        if not n.endswith(NO_CLIP):
                            _clip(self.grid, linear, feats[n])
                inputs.hidden = next_hidden
                p.advance()
        state = QuantState(self.grid, info={"method": "awq", "alpha": scaled_ratios})
        for i, layer in enumerate(decoder_layers(model)):
            for n, m in layer.named_modules():
                if isinstance(m, nn.Linear):
                    state.add_linear(f"{prefix}.{i}.{n}", m.weight.detach())
            for n, p in layer.named_parameters():
                if not any(n == f"{ln}.weight" for ln, m in layer.named_modules() if isinstance(m, nn.Linear)):
                    state.floats[f"{prefix}.{i}.{n}"] = p.detach().clone()  # folded norms, scaled biases
        return state

    @torch.no_grad()
    def _search(
        self, layer: nn.Module, group: dict[str, Any], feats: dict[str, torch.Tensor], kwargs: dict
    ) -> tuple[float, torch.Tensor]:
        x = feats[group["linears"][0]]
        block = layer.get_submodule(group["block"])
        fcs = [layer.get_submodule(n) for n in group["linears"]]

        def forward() -> torch.Tensor:
            out = block(x, **kwargs) if group["block"] == "self_attn" else block(x)
            return out[0] if isinstance(out, tuple) else out

        reference = forward()
        x_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(0)
        originals = [fc.weight.detach().clone() for fc in fcs]
        best = (math.inf, 0.0, torch.ones_like(x_mean))
        for step in range(N_GRID):
            alpha = step / N_GRID
            s = x_mean.pow(alpha).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            for fc, w in zip(fcs, originals, strict=True):
                fc.weight.copy_(self.grid.fake(w * s.to(w.dtype)) / s.to(w.dtype))
            loss = float((reference - forward()).float().pow(2).mean())
            if loss < best[0]:
                best = (loss, alpha, s.clone())
        for fc, w in zip(fcs, originals, strict=True):
            fc.weight.copy_(w)
        return best[1], best[2]


@torch.no_grad()
def _fold(layer: nn.Module, group: dict[str, Any], scales: torch.Tensor) -> None:
    """Divide the previous op's output by `scales`, multiply the linears' input columns by them."""
    prev = group["prev"]
    if isinstance(prev, nn.Linear):
        prev.weight[-scales.numel() :].div_(scales.view(-1, 1).to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(scales.to(prev.bias.dtype))
    else:
        prev.weight.div_(scales.to(prev.weight.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(scales.to(prev.bias.dtype))
    for n in group["linears"]:
        fc = layer.get_submodule(n)
        fc.weight.mul_(scales.view(1, -1).to(fc.weight.dtype))


@torch.no_grad()
def _clip(grid: Grid, linear: nn.Linear, x: torch.Tensor) -> None:
    """llm-awq auto_clip: per (output channel, group), clamp |w| to the shrink with the least output MSE."""
    w = linear.weight.detach().float()
    out_f, in_f = w.shape
    g = grid.group(in_f)
    groups = math.ceil(in_f / g)
    pad = groups * g - in_f
    x = x.reshape(-1, in_f).float()
    x = x[:: max(1, x.shape[0] // CLIP_TOKENS)]
    if pad:  # pad the short last group: repeated weights, zero activations (outputs unchanged)
        w = torch.cat([w, w[:, -1:].expand(out_f, pad)], 1)
        x = torch.cat([x, x.new_zeros(x.shape[0], pad)], 1)
    wg = w.reshape(out_f, groups, g).transpose(0, 1)  # [G, out, g]
    xg = x.reshape(-1, groups, g).transpose(0, 1)  # [G, T, g]
    reference = xg @ wg.transpose(1, 2)  # [G, T, out]
    max_abs = wg.abs().amax(-1, keepdim=True)  # [G, out, 1]
    best_err = torch.full_like(max_abs, math.inf)
    best_max = max_abs.clone()
    for step in range(int(MAX_SHRINK * N_GRID)):
        limit = max_abs * (1 - step / N_GRID)
        q = grid.dequant(*_codes(grid, torch.clamp(wg, -limit, limit)))
        err = (xg @ q.transpose(1, 2) - reference).pow(2).mean(1).unsqueeze(-1)  # [G, out, 1]
        better = err < best_err
        best_err[better], best_max[better] = err[better], limit[better]
    clipped = torch.clamp(wg, -best_max, best_max).transpose(0, 1).reshape(out_f, -1)[:, :in_f]
    linear.weight.copy_(clipped.to(linear.weight.dtype))


def _codes(grid: Grid, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    scale, zero = grid.params(w)
    return grid.codes(w, scale, zero), scale, zero
