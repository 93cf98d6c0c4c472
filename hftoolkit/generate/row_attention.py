"""Attention that computes a token's row alike in every forward pass that holds it.

Prompt-lookup decoding checks several proposed tokens in one forward pass and keeps them only where plain
greedy decoding would have picked the same; its first pass holds the prompt and the first proposals together.
In bf16 that changed some answers: torch's fused kernel splits its work by the length of the pass, so a row
is rounded differently in a pass of one token, of several, or of the whole prompt. Here each row of a pass is
one call of the same kernel over exactly the keys it may see (positions 0 to its own), which is the call plain
decoding makes for that token: the same shapes and numbers in a pass of one row or of many (tested). A long
pass costs one call per row, so the engine computes the prompt with sdpa, by itself in every mode, and this
attention only for the tokens after it (`Generator.run_generate`).

An earlier version computed each row in fp32 over zero-padded blocks of 64 keys, as batched matmuls, at 5-8x
sdpa's cost per layer; this costs 1.4x for one row and 5x for 11 (`python -m benchmarks.decode_attention`).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "hftoolkit_rows"
CHECK_ROWS = 11  # the longest pass checked: one token and prompt lookup's default 5 proposals, with room
CHECK_LENGTHS = (40, 140)  # cache lengths the check's passes end at


def row_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """sdpa once per row of the pass, over the keys up to its own position; a row's padding mask goes along
    only where it hides one of those keys (a mask that hides nothing may change the kernel's path)."""
    rows, length = query.shape[2], key.shape[2]
    first = length - rows  # the position of the pass's first row
    masks = row_masks(attention_mask, rows, length)
    gqa = key.shape[1] != query.shape[1]
    outputs = [torch.nn.functional.scaled_dot_product_attention(
        row_query, key[:, :, :first + row + 1], value[:, :, :first + row + 1], attn_mask=masks[row], scale=scaling,
        enable_gqa=gqa).transpose(1, 2) for row, row_query in enumerate(query.split(1, dim=2))]
    return (outputs[0] if rows == 1 else torch.cat(outputs, dim=1)), None


_last_masks = (None, 0, [])  # (attention mask, cache length, its row masks): every layer of a pass gets one mask


def row_masks(attention_mask, rows: int, length: int) -> list:
    """Each row's padding mask over the keys it sees, or None where it hides none of them; worked out once per
    pass (the layers share the pass's mask) rather than once per layer."""
    global _last_masks
    if attention_mask is None:
        return [None] * rows
    mask, cached_length, masks = _last_masks
    if mask is attention_mask and cached_length == length:
        return masks
    visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0  # additive: 0 = seen
    visible = visible[..., -length:]
    first = length - rows
    own = torch.arange(length, device=visible.device) <= torch.arange(first, length, device=visible.device)[:, None]
    hides = ((~visible) & own).flatten(end_dim=1).any(-1).any(0).tolist()  # per row
    masks = [visible[:, :, row:row + 1, :first + row + 1] if hides[row] else None for row in range(rows)]
    _last_masks = (attention_mask, length, masks)
    return masks


def rows_alike(heads: int, key_heads: int, head_dim: int, dtype=torch.bfloat16) -> bool:
    """Whether random rows come out bit for bit the same computed alone (the cache ending at the row, as plain
    decoding holds it) and in passes of 2..`CHECK_ROWS` rows; checked once per model, since a CPU's kernel might
    still treat a slice of a longer cache differently."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for length in CHECK_LENGTHS:
            query = torch.randn(1, heads, CHECK_ROWS, head_dim, generator=generator).to(dtype)
            key, value = (torch.randn(1, key_heads, length, head_dim, generator=generator).to(dtype) for _ in "kv")
            first = length - CHECK_ROWS
            alone = [row_attention(None, query[:, :, row:row + 1], key[:, :, :first + row + 1].clone(),
                                   value[:, :, :first + row + 1].clone(), None, head_dim ** -0.5)[0][:, 0]
                     for row in range(CHECK_ROWS)]
            for rows in range(2, CHECK_ROWS + 1):
                together = row_attention(None, query[:, :, -rows:], key, value, None, head_dim ** -0.5)[0]
                if not all(torch.equal(together[:, row], alone[CHECK_ROWS - rows + row]) for row in range(rows)):
                    return False
    return True


def use_row_attention(model) -> bool:
    """Switch a model that runs sdpa attention to `row_attention`; False when it uses something else, or when
    this CPU rounds a row differently by pass (`rows_alike`)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if not rows_alike(heads, getattr(config, "num_key_value_heads", None) or heads, head_dim, model.dtype):
        return False
    AttentionInterface.register(NAME, row_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
