"""Cheaper CPU versions of pieces of a training step, with the same maths.

Profiled on the from-scratch GPT-2 (4 x 192, batch 16 x 128, bf16 on a CPU with AMX), dropout's
`bernoulli_` was a quarter of the step: PyTorch's CPU kernel draws one random number per element.
Here a keep-mask takes 15 bits per element from 64-bit draws (4 elements per draw), so each
element is still dropped independently with probability p (rounded to a multiple of 1/32768) and
the kept ones are scaled by 1/(1 - p). On the same step:

- `nn.Dropout` layers (residual, embedding, classifier, LoRA's) become `CheapMaskDropout`;
- attention dropout, which sdpa on a CPU runs through its slow math path, runs in `attention` below
  (softmax(QK^T) products, the same cheap mask); without dropout (evaluation) it calls sdpa as before;
- so does bf16 attention over short sequences while training: sdpa's flash kernel for a CPU spent
  a quarter of a bf16 SmolLM2 LoRA step (8 x 190 tokens) in its forward and backward; as two matmuls
  the step took 3.9 s instead of 4.5 s on an AMD EPYC with AVX-512 BF16 (a full fine-tune on 8 x 256
  was the same either way). The scores stay bf16 through the mask and the softmax, and grouped-query
  heads share their key head without copies: a full fine-tune step on 8 x 256 3.70 -> 3.46 s and
  330 MB less peak memory on a Xeon with AMX;
- grouped-query attention under a mask (packed documents, padding) calls sdpa with `enable_gqa` where
  transformers repeats every key and value head for each of its query heads first (it keeps `enable_gqa` for
  mask-free calls, as CUDA kernels need): SmolLM2's 3 key heads serve 9 query heads, and the repeats and the
  sums of their gradients were 0.2 s of an fp32 text step of 14 s on an AVX2 CPU;
- GPT-2's `gelu_new`, written in Python as five element-wise ops, becomes transformers' fused
  `GELUTanh`: the same tanh formula (equal up to rounding);
- peft's LoRA layers stop casting their bf16 input to the fp32 adapter weights, which autocast casts
  straight back to bf16 for the matmul (bit for bit the same; a LoRA step on SmolLM2 1.93 -> 1.82 s).

Only the modules in memory change: config.json, the weights and what `from_pretrained` loads are
untouched, and `restore` puts the attention implementation and the adapters' casting back once
training ends.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "hftoolkit_cpu_train"  # the attention implementation registered with transformers
MATMUL_ATTENTION_TOKENS = 512  # bf16 training attention by matmuls up to this length (its weights are kept)
_BITS = 32768  # 15-bit uniform draws


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A (shape) tensor of 0 and 1/(1-p): each element kept with probability 1 - p."""
    count = shape.numel()
    threshold = round(p * _BITS)
    draws = torch.empty((count + 3) // 4, dtype=torch.int64).random_()  # 63 random bits each
    lanes = draws.bitwise_and_(0x7FFF7FFF7FFF7FFF).view(torch.int16)[:count]  # 4 lanes of 15 bits
    return (lanes >= threshold).view(shape).to(dtype).mul_(_BITS / (_BITS - threshold))


def cheap_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    if p <= 0 or p >= 1 or x.device.type != "cpu" or round(p * _BITS) == 0:
        return nn.functional.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype)


class CheapMaskDropout(nn.Dropout):
    """`nn.Dropout` whose training-time mask costs a quarter of a random draw per element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cheap_dropout(x, self.p) if self.training else x


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention for transformers' AttentionInterface: sdpa (grouped-query heads under a mask without repeated
    keys and values), except while training with dropout or short bf16 sequences on a CPU.

    query: (batch, heads, q, head_dim); key, value: (batch, kv_heads, k, head_dim); attention_mask: sdpa's
    boolean mask (True where a query may attend), (batch, 1, q, k), or None (causal when the module is)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bf16 = torch.bfloat16 in (query.dtype, value.dtype)  # under autocast RoPE leaves query and key in fp32
    short_bf16 = bf16 and key.shape[-2] <= MATMUL_ATTENTION_TOKENS
    if not (module.training and query.device.type == "cpu" and (dropout > 0 or short_bf16)):
        if grouped_under_mask(query, key, value, attention_mask):
            return grouped_sdpa(query, key, value, attention_mask, scaling), None
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    batch, heads, q_len, width = query.shape
    kv_heads, k_len = key.shape[1], key.shape[-2]
    scaling = width ** -0.5 if scaling is None else scaling
    # Each key/value head serves `heads // kv_heads` query heads (grouped-query attention): the query heads of a
    # group are stacked as rows against their one key head, so keys and values are never repeated (nor their
    # gradients summed back). The query is scaled, not the scores: a quarter of the elements at 64-wide heads.
    grouped = (query * scaling).reshape(batch, kv_heads, -1, width)
    weights = torch.matmul(grouped, key.transpose(-1, -2)).view(batch, heads, q_len, k_len)
    masked_out = None
    if attention_mask is not None and attention_mask.dtype != torch.bool:  # an additive mask passed in
        weights = weights + attention_mask[:, :, :, :k_len]
    elif attention_mask is not None:
        masked_out = ~attention_mask[:, :, :, :k_len]  # sdpa's boolean mask: True where attended
    elif kwargs.get("is_causal", getattr(module, "is_causal", False)) and query.shape[-2] > 1:
        masked_out = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).triu(k_len - q_len + 1)
    if masked_out is not None:
        weights = weights.masked_fill(masked_out, torch.finfo(weights.dtype).min)
    if weights.dtype == torch.bfloat16:
        # bf16 scores stay bf16 (the CPU softmax accumulates in fp32): no fp32 copy of the scores
        weights = torch.softmax(weights, dim=-1)
    else:
        weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(value.dtype)
    weights = cheap_dropout(weights, dropout)
    output = torch.matmul(weights.view(batch, kv_heads, -1, k_len), value).view(batch, heads, q_len, -1)
    return output.transpose(1, 2).contiguous(), weights


def grouped_under_mask(query, key, value, attention_mask) -> bool:
    """Grouped-query heads with a boolean mask on a CPU, where transformers would repeat keys and values."""
    return (query.device.type == "cpu" and attention_mask is not None and attention_mask.dtype == torch.bool
            and key.shape[1] != query.shape[1] and query.shape[1] % key.shape[1] == 0
            and query.shape[-1] == key.shape[-1] == value.shape[-1])


def grouped_sdpa(query, key, value, attention_mask, scaling=None):
    """sdpa over grouped-query heads without repeating keys and values; (batch, q, heads, head_dim) as
    transformers' attention functions return it."""
    mask = attention_mask[:, :, :, :key.shape[-2]]
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                              enable_gqa=True)
    return output.transpose(1, 2).contiguous()


def grouped_query_heads(config) -> bool:
    """Whether a config's attention has fewer key/value heads than query heads (Llama, Qwen, Gemma, ...)."""
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None)
    return bool(heads and kv_heads and kv_heads < heads)


def attention_dropout_of(config) -> float:
    """The attention-probability dropout a transformers config sets (GPT-2, BERT and Llama spell it apart)."""
    names = ("attn_pdrop", "attention_probs_dropout_prob", "attention_dropout")
    return max(float(getattr(config, name, 0.0) or 0.0) for name in names)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention)
    # boolean masks, as sdpa takes them: the matmul path fills masked scores in the scores' own dtype
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_cpu_kernels(model, bf16: bool = False) -> list[str]:
    """Swap in the cheaper pieces above, in place (`bf16`: the run trains under bf16 autocast); returns what
    changed, for the training log."""
    from transformers.activations import GELUTanh, NewGELUActivation

    dropouts = gelus = adapters = 0
    for parent in list(model.modules()):
        if getattr(parent, "cast_input_dtype_enabled", None) is True:  # a peft adapter layer
            parent.cast_input_dtype_enabled = False
            adapters += 1
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, CheapMaskDropout(child.p).train(child.training))
                dropouts += 1
            elif type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh().train(child.training))
                gelus += 1
    changed = [f"{dropouts} dropout layers with a cheaper mask"] if dropouts else []
    if gelus:
        changed.append(f"{gelus} tanh GELUs fused")
    if adapters:
        changed.append(f"{adapters} LoRA layers without the input's round trip to fp32")
    config = getattr(model, "config", None)
    dropout = config is not None and attention_dropout_of(config) > 0
    grouped = config is not None and grouped_query_heads(config)
    if (dropout or bf16 or grouped) and config is not None and config._attn_implementation in ("sdpa", "eager"):
        _register()
        model._hftoolkit_attention_before = config._attn_implementation
        config._attn_implementation = NAME
        if dropout:
            changed.append("attention dropout with the same mask")
        if bf16:
            changed.append(f"bf16 attention by matmuls up to {MATMUL_ATTENTION_TOKENS} tokens")
        if grouped:
            changed.append("grouped-query attention without repeated keys and values")
    return changed


def restore(model) -> None:
    """The attention implementation and adapter casting the model had before `use_cpu_kernels` (the other
    swaps are harmless)."""
    for module in model.modules():
        if getattr(module, "cast_input_dtype_enabled", None) is False:
            module.cast_input_dtype_enabled = True
    before = getattr(model, "_hftoolkit_attention_before", None)
    if before is not None:
        model.config._attn_implementation = before
        del model._hftoolkit_attention_before
