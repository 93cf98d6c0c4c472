"""bf16 linear layers for generation on a CPU, with each weight laid out once for oneDNN.

A decode step at batch 1 multiplies one row by every weight matrix, so it is bound by how fast the weights are
read; oneDNN's bf16 kernel on a weight reordered in advance reads them faster than torch's plain bf16 path for a
single row. How oneDNN splits a long pass between threads depends on the pass's length, so a prompt's rows would
round differently with or without the first prompt-lookup proposals after them: long passes run in fixed tiles
of rows. The layers compute what `nn.Linear` computes; only inference uses them (`Generator.speed_up`).
"""

from __future__ import annotations

import torch

FEW_ROWS = 16  # passes up to this many rows (decode steps, prompt-lookup checks) run as they are
ROW_TILE = 64  # longer passes (prompts) go in tiles of this many rows, the last one padded


class PackedLinear(torch.nn.Module):
    """`x @ weight.T + bias` with the weight reordered for oneDNN at construction."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, 1), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= FEW_ROWS:
            return self._rows(x)
        flat = torch.nn.functional.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, -rows % ROW_TILE))
        out = torch.cat([self._rows(flat[start:start + ROW_TILE]) for start in range(0, len(flat), ROW_TILE)])
        return out[:rows].reshape(*x.shape[:-1], self.out_features)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_pack(model) -> bool:
    """bf16 weights on a CPU with AMX, where oneDNN's bf16 kernels were measured faster and a row was checked to
    round alike in passes of any length (tests/test_generation_layers.py); other CPUs keep torch's layers."""
    return (model.device.type == "cpu" and model.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported() and torch.cpu._is_amx_tile_supported())


def pack_linears(model) -> int:
    """Replace every `nn.Linear` of a bf16 CPU model with a `PackedLinear`; the number replaced.

    A tied output layer gets its own packed copy (the embedding keeps the original), a few tens of MB."""
    if not can_pack(model):
        return 0
    chosen = [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PackedLinear(module))
    return len(chosen)
