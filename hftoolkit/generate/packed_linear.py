"""bf16 linear layers for generation on a CPU, with each weight laid out once for oneDNN.

A decode step at batch 1 multiplies one row by every weight matrix, so it is bound by how fast the weights are
read; oneDNN's bf16 kernel on a weight reordered in advance reads them faster than torch's plain bf16 path for a
single row. Prompt-lookup checks compute a few rows in one pass, and plain decoding one row at a time, so each
row must round alike in passes of 1 to `FEW_ROWS` rows. How oneDNN splits the sum depends on the CPU and the
pass: with AMX every pass tried came out alike; on an AVX-512 BF16 CPU without AMX a 1536-wide input (SmolLM2's
down projection) rounded a row differently alone and among 2-16 rows, but alike in fixed tiles of 2 rows, padded.
So `pack_linears` checks each weight shape once on random rows and picks the smallest tile that rounds alike
(1: passes run as they are), or packs nothing. Longer passes (prompts, batches) run whole. The layers compute what
`nn.Linear` computes; only inference uses them (`Generator.speed_up`).
"""

from __future__ import annotations

import torch

from hftoolkit.train.precision import cpu_has_bf16_instructions

FEW_ROWS = 16  # the longest pass that must round each row as one row alone does (prompt-lookup checks)
TILES = (1, 2, 4, 8, 16)  # rows per oneDNN call for such passes, tried in this order
CHECK_DRAWS = 4  # random inputs per weight shape in that check


class PackedLinear(torch.nn.Module):
    """`x @ weight.T + bias` with the weight reordered for oneDNN at construction; passes of up to `FEW_ROWS` rows
    go through in tiles of `tile` rows (the last one padded)."""

    def __init__(self, linear: torch.nn.Linear, tile: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.tile = linear.in_features, linear.out_features, tile
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, 1), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > FEW_ROWS or self.tile == 1:
            return self._rows(x)
        flat = torch.nn.functional.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, -rows % self.tile))
        out = torch.cat([self._rows(flat[start:start + self.tile]) for start in range(0, len(flat), self.tile)])
        return out[:rows].reshape(*x.shape[:-1], self.out_features)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"tile={self.tile}")


def rows_alike(layer: PackedLinear, draws: int = CHECK_DRAWS) -> bool:
    """Whether random rows come out bit for bit the same alone and at the head of passes of 2..FEW_ROWS rows
    (so at every place in a tile)."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for _ in range(draws):
            x = torch.randn(FEW_ROWS, layer.in_features, generator=generator).to(torch.bfloat16)
            alone = torch.cat([layer(x[row:row + 1]) for row in range(FEW_ROWS)])
            if not all(torch.equal(layer(x[:rows]), alone[:rows]) for rows in range(2, FEW_ROWS + 1)):
                return False
    return True


def tile_for(linear: torch.nn.Linear) -> int | None:
    """The fewest rows per oneDNN call with which `linear`'s shape rounds rows alike on this CPU, or None."""
    for tile in TILES:
        if rows_alike(PackedLinear(linear, tile)):
            return tile
    return None


def can_pack(model) -> bool:
    """bf16 weights on a CPU with bf16 instructions (AMX, or AVX-512 BF16 without it), where oneDNN's bf16 kernels
    were measured faster (benchmarks/answer_speed.py); other CPUs keep torch's layers."""
    return (model.device.type == "cpu" and model.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported() and cpu_has_bf16_instructions())


def pack_linears(model) -> int:
    """Replace every `nn.Linear` of a bf16 CPU model with a `PackedLinear`; the number replaced, 0 when this CPU
    rounds some shape's rows differently by pass in every tile tried (nothing is replaced then).

    A tied output layer gets its own packed copy (the embedding keeps the original), a few tens of MB."""
    if not can_pack(model):
        return 0
    chosen = [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]
    tiles = {}  # one check per weight shape
    for _, module in chosen:
        shape = (module.in_features, module.out_features, module.bias is not None)
        if shape not in tiles:
            tiles[shape] = tile_for(module)
    if None in tiles.values():
        return 0
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        tile = tiles[(module.in_features, module.out_features, module.bias is not None)]
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PackedLinear(module, tile))
    return len(chosen)
