"""Linear layers for generation on a CPU, with each weight laid out once for oneDNN: bf16 where the CPU has bf16
instructions, fp32 where it has none.

A decode step at batch 1 multiplies one row by every weight matrix, so it is bound by how fast the weights are
read; oneDNN's bf16 kernel on a weight reordered in advance reads them faster than torch's plain bf16 path for a
single row. Prompt-lookup checks compute a few rows in one pass, and plain decoding one row at a time, so each
row must round alike in passes of 1 to `FEW_ROWS` rows. How oneDNN splits the sum depends on the CPU and the
pass: with AMX every pass tried came out alike; on an AVX-512 BF16 CPU without AMX a 1536-wide input (SmolLM2's
down projection) rounded a row differently alone and among 2-16 rows, but alike in fixed tiles of 2 rows, padded.
So `pack_linears` checks each weight shape once on random rows and picks the smallest tile that rounds alike
(1: passes run as they are), or packs nothing. Longer passes (prompts, batches) run whole. The layers compute what
`nn.Linear` computes; only inference uses them (`Generator.speed_up`).

fp32, on a CPU without bf16 instructions (where generation runs in fp32): oneDNN's fp32 kernel on a reordered
weight read one token's SmolLM2 linears in 33-37 ms against 41-53 ms for torch's, and a prompt-lookup check of 2-6
rows in 54-63 ms against 85-109 ms (2-core AVX2-only EPYC). Its rows do not round alike alone and among others, and
neither do torch's fp32 layers': fp32 passes run whole (tile 1, nothing checked), and prompt lookup keeps plain
greedy's ids in fp32 as measured on real answers, not by construction (`benchmarks/answer_speed.py`).

Layers that read the same input (a transformer block's query, key and value projections; its MLP's gate and up
projections) are packed as one weight and computed in one call: a decode step makes 4 calls per block instead of 7
and reads larger matrices, which oneDNN reads faster (`python -m benchmarks.decode_linears`; on AMX 11.9 against
15.0 ms for one token's linears).
"""

from __future__ import annotations

import itertools

import torch

from hftoolkit.train.precision import cpu_has_bf16_instructions

FEW_ROWS = 16  # the longest pass that must round each row as one row alone does (prompt-lookup checks)
TILES = (1, 2, 4, 8, 16)  # rows per oneDNN call for such passes, tried in this order
CHECK_DRAWS = 4  # random inputs per weight shape in that check
SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # sibling layers fed the same tensor


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


class SharedInputLinears(torch.nn.Module):
    """Sibling linear layers packed as one weight: the first of them to see an input computes every output, the
    others take their part of it. An input seen for the first time (or changed in place) is computed anew, so
    calling the layers in any order, or on different inputs, still gives each its own `x @ weight.T + bias`."""

    def __init__(self, linears: list[torch.nn.Linear], tile: int = 1):
        super().__init__()
        self.packed = PackedLinear(joined(linears), tile)
        ends = list(itertools.accumulate(linear.out_features for linear in linears))
        self.parts = list(zip([0] + ends[:-1], ends))
        self.held = HeldOutput()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        held = self.held
        version = None if x.is_inference() else x._version  # inference tensors cannot change in place
        if x is not held.input or version != held.version or held.left == 0:
            held.input, held.version, held.output, held.left = x, version, self.packed(x), len(self.parts)
        output = held.output
        held.left -= 1
        if held.left == 0:  # every sibling served: hold no tensors between steps
            held.input = held.output = None
        start, end = self.parts[index]
        return output[..., start:end]


class HeldOutput:
    """The last input of a `SharedInputLinears`, its output and how many siblings have yet to take their part; a
    plain object, since setting a module's attributes costs several microseconds per call (measured: ~0.5 s of
    10 s of answers under the profiler)."""

    __slots__ = ("input", "version", "output", "left")

    def __init__(self):
        self.input = self.version = self.output = None
        self.left = 0


def joined(linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """One linear layer whose outputs are those of `linears` side by side."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linears[0].bias is not None,
                            device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(torch.cat([linear.bias.detach() for linear in linears]))
    return layer


class PartOfShared(torch.nn.Module):
    """Stands where one of the siblings was; computes through their shared packed weight."""

    def __init__(self, shared: SharedInputLinears, index: int):
        super().__init__()
        self.shared, self.index = shared, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.part(x, self.index)


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
    """bf16 weights on a CPU with bf16 instructions (AMX, or AVX-512 BF16 without it), fp32 weights on a CPU
    without them: where oneDNN's kernels were measured faster (benchmarks/answer_speed.py). fp32 on a CPU with bf16
    instructions (generation there runs in bf16 unless asked) keeps torch's layers: not measured."""
    if model.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if model.dtype == torch.float32:
        return not cpu_has_bf16_instructions()
    return (model.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and cpu_has_bf16_instructions())


def pack_linears(model) -> int:
    """Replace every `nn.Linear` of a CPU model `can_pack` accepts with a `PackedLinear`, siblings that read the
    same input (`SHARED_INPUT`) with one `SharedInputLinears`; the number of layers replaced. bf16: 0 when this
    CPU rounds some shape's rows differently by pass in every tile tried (nothing is replaced then); fp32: passes
    run whole (see the module's docstring).

    A tied output layer gets its own packed copy (the embedding keeps the original), a few tens of MB in bf16."""
    if not can_pack(model):
        return 0
    groups = linear_groups(model)
    tiles = {}  # one check per weight shape
    for _, linears in groups:
        shape = joined_shape(linears)
        if shape not in tiles:
            tiles[shape] = 1 if model.dtype == torch.float32 else tile_for(joined(linears) if len(linears) > 1
                                                                             else linears[0])
        if tiles[shape] is None:
            return 0
    for names, linears in groups:
        shape = joined_shape(linears)
        if len(linears) == 1:
            _replace(model, names[0], PackedLinear(linears[0], tiles[shape]))
            continue
        shared = SharedInputLinears(linears, tiles[shape])
        for index, name in enumerate(names):
            _replace(model, name, PartOfShared(shared, index))
    return sum(len(names) for names, _ in groups)


def joined_shape(linears: list[torch.nn.Linear]) -> tuple[int, int, bool]:
    """(inputs, outputs, bias or not) of `linears` packed side by side: what the tile check depends on."""
    return linears[0].in_features, sum(linear.out_features for linear in linears), linears[0].bias is not None


def linear_groups(model) -> list[tuple[list[str], list[torch.nn.Linear]]]:
    """Every `nn.Linear` of `model` by name, alone or with the siblings it shares its input with (the same input
    width, dtype and bias or none)."""
    linears = {name: module for name, module in model.named_modules() if type(module) is torch.nn.Linear}
    groups, grouped = [], set()
    for name in linears:
        parent, _, child = name.rpartition(".")
        for siblings in SHARED_INPUT:
            names = [f"{parent}.{sibling}" if parent else sibling for sibling in siblings]
            members = [linears.get(member) for member in names]
            if child == siblings[0] and all(members) and len({(m.in_features, m.weight.dtype, m.bias is None)
                                                                 for m in members}) == 1:
                groups.append((names, members))
                grouped.update(names)
    groups += [([name], [module]) for name, module in linears.items() if name not in grouped]
    return groups


def _replace(model, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
