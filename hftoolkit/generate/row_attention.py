"""Attention that computes a token's row alike in every forward pass that holds it.

Prompt-lookup decoding checks several proposed tokens in one forward pass and keeps them only where plain
greedy decoding would have picked the same; its first pass holds the prompt and the first proposals together.
In bf16 that changed some answers: torch's fused kernel splits its work by the length of the pass, so a row
is rounded differently in a pass of one token, of several, or of the whole prompt. Here a row at position p
is always computed over the keys of its block, positions 0 to the next multiple of `BLOCK` after p: positions
it may not see are masked to the same constant whether they hold later tokens or zero padding, so the scores,
the softmax and the weighted values (all in fp32) have the same shapes and numbers in every pass (tested).
Rows of one block share their matmuls, so a prompt costs a few matmuls per layer.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "hftoolkit_rows"
BLOCK = 64  # positions per key block


def row_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Scores by matmul, softmax, weighted values, in fp32; heads that share a key head share its matmul."""
    batch, heads, rows, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups, first = heads // kv_heads, length - rows  # `first`: the position of the pass's first row
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask == 0  # an additive mask: 0 where a key may be seen
    outputs, row = [], 0
    while row < rows:
        end = ((first + row) // BLOCK + 1) * BLOCK  # the keys of this row's block
        count = min(rows - row, end - first - row)  # the pass's rows inside the block
        keys, values = _block(key, end), _block(value, end)  # fp32: small bf16 matmuls are slow on a CPU
        grouped = query[:, :, row:row + count].reshape(batch, kv_heads, groups * count, dim).float()
        scores = (torch.matmul(grouped, keys.transpose(2, 3)) * scaling).reshape(batch, heads, count, end)
        positions = torch.arange(first + row, first + row + count, device=query.device)
        visible = torch.arange(end, device=query.device) <= positions[:, None]
        if attention_mask is not None:  # left padding of a batch
            padding = torch.zeros(*attention_mask.shape[:2], count, end, dtype=torch.bool, device=query.device)
            seen = min(end, length)
            padding[..., :seen] = attention_mask[:, :, row:row + count, -length:][..., :seen]
            visible = visible & padding
        scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        output = torch.matmul(weights.reshape(batch, kv_heads, groups * count, end), values)
        outputs.append(output.reshape(batch, heads, count, dim).to(query.dtype))
        row += count
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return output.transpose(1, 2).contiguous(), None


def _block(states: torch.Tensor, end: int) -> torch.Tensor:
    """Keys or values for positions 0..end-1 in fp32, zeros past the last one, always a fresh tensor."""
    block = states.new_zeros(*states.shape[:2], end, states.shape[3], dtype=torch.float32)
    seen = min(end, states.shape[2])
    block[:, :, :seen] = states[:, :, :seen]
    return block


def use_row_attention(model) -> bool:
    """Switch a model that runs sdpa attention to `row_attention`; False when it uses something else."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, row_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
