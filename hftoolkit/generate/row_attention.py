"""Attention that computes a token's row alike in every forward pass that holds it.

Prompt-lookup decoding checks several proposed tokens in one forward pass and keeps them only where plain
greedy decoding would have picked the same; its first pass holds the prompt and the first proposals together.
In bf16 that changed some answers: torch's fused kernel splits its work by the length of the pass, so a row
is rounded differently in a pass of one token, of several, or of the whole prompt. Here a row at position p
is always computed over the keys of its block, positions 0 to the next multiple of `BLOCK` after p: positions
it may not see are masked to the same constant whether they hold later tokens or zero padding, so the scores,
the softmax and the weighted values (all in fp32) have the same shapes and numbers in every pass (tested).
Each row has its own batch entries, so a long pass costs more than sdpa: the engine computes the prompt with
sdpa, by itself in every mode, and this attention only for the tokens after it (`Generator.run_generate`).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "hftoolkit_rows"
BLOCK = 64  # positions per key block


def row_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Scores, softmax and weighted values in fp32, as batched matmuls of contiguous operands with one (row, key
    head) per batch entry: each row's products have the same shapes and layout whichever pass holds it (one
    matmul over several rows, or a transposed view, came out differently on an AVX-512 BF16 CPU). Heads that share
    a key head share its entry."""
    batch, heads, rows, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups, first = heads // kv_heads, length - rows  # `first`: the position of the pass's first row
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask == 0  # an additive mask: 0 where a key may be seen
    outputs, row = [], 0
    while row < rows:
        end = ((first + row) // BLOCK + 1) * BLOCK  # the keys of this row's block
        count = min(rows - row, end - first - row)  # the pass's rows inside the block
        entries = batch * count * kv_heads
        grouped = query[:, :, row:row + count].reshape(batch, kv_heads, groups, count, dim).permute(0, 3, 1, 2, 4)
        keys = _block(key, end).transpose(2, 3).unsqueeze(1).expand(batch, count, kv_heads, dim, end)
        scores = torch.bmm(grouped.reshape(entries, groups, dim).float().contiguous(),
                           keys.reshape(entries, dim, end).contiguous())
        scores = scores.view(batch, count, kv_heads, groups, end) * scaling
        positions = torch.arange(first + row, first + row + count, device=query.device)
        visible = (torch.arange(end, device=query.device) <= positions[:, None])[:, None, None]  # (count,1,1,end)
        if attention_mask is not None:  # left padding of a batch
            padding = torch.zeros(batch, count, end, dtype=torch.bool, device=query.device)
            seen = min(end, length)
            padding[..., :seen] = attention_mask[:, 0, row:row + count, -length:][..., :seen]
            visible = visible & padding[:, :, None, None]
        weights = torch.softmax(scores.masked_fill(~visible, torch.finfo(scores.dtype).min), dim=-1)
        values = _block(value, end).unsqueeze(1).expand(batch, count, kv_heads, end, dim)
        output = torch.bmm(weights.reshape(entries, groups, end).contiguous(),
                           values.reshape(entries, end, dim).contiguous())
        output = output.view(batch, count, kv_heads, groups, dim).permute(0, 2, 3, 1, 4)
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
