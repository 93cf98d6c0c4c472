"""The passes after the prompt of a Llama-architecture model, as the same torch calls without transformers' wrapping.

A decode pass at batch 1 computes one token, or a few with prompt lookup. transformers' forward runs every one of
its ~300 module calls through `nn.Module.__call__`, and the model's forward through decorators that merge config
defaults, capture outputs and build an attention mask: on a 2-core CPU that costs milliseconds per pass, a
sixth of a bf16 pass. Here the same operations run in the same order on the same modules and weights, so the
logits are transformers' bit for bit (tested); only the wrapping is gone. It serves the passes that run on the row
attention (`Generator.run_generate`); anything it leaves out (other architectures, padding, embeddings given,
outputs asked for) goes through the model's own forward.

The prompt's last token is computed with the rest of the prompt, in the one pass over it (`prompt_pass`), and held:
the first decode pass then has nothing to compute, where it used to read every weight for that one token (a sixth
of a short answer's passes). Prompt lookup proposes nothing for the answer's first token, so both modes start alike
and keep the same ids: a chat prompt ends with the template's header, whose n-grams occur only in the template, and
the proposals after it were never taken in 101 held-out answers (a plain prompt may lose one useful check).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM, rotate_half

from hftoolkit.generate.row_attention import row_attention

ASKS_FOR_MORE = ("output_attentions", "output_hidden_states")  # outputs this pass does not make


def fits(model) -> bool:
    """A Llama model as transformers builds it (SmolLM2 is one); other architectures keep their forward."""
    return type(model) is LlamaForCausalLM and all(type(layer) is LlamaDecoderLayer for layer in model.model.layers)


class DecodePass:
    """`forward` for `model`: the passes after the prompt (one row, a cache, no padding) computed directly, any
    other call handed to the model's own forward."""

    def __init__(self, model):
        self.model, self.own_forward = model, model.forward
        self.own_candidate_generator = model._get_candidate_generator
        self.held = None  # the prompt's last token, between the prompt pass and the first decode pass

    @contextmanager
    def installed(self):
        """The model's forward and its prompt-lookup proposals are this object's while generate() runs."""
        model = self.model
        model.forward, model._get_candidate_generator = self.forward, self.candidate_generator
        try:
            yield
        finally:
            self.held = None
            del model.forward, model._get_candidate_generator  # the class's own methods again

    def prompt_pass(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
        """The whole prompt in one pass of the model as it is set (sdpa); returns the cache of all but the last
        token and holds that token's keys, values and logits for the first decode pass."""
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1)
        cache = output.cache
        keys_values = [(layer.keys[..., -1:, :].clone(), layer.values[..., -1:, :].clone()) for layer in cache.layers]
        self.held = HeldToken(ids.shape[1] - 1, int(ids[0, -1]), keys_values, output.logits[:, -1:])
        cache.crop(-1)
        return cache

    def candidate_generator(self, *args, **kwargs):
        """transformers' candidate generator, proposing nothing until the answer has its first token."""
        generator = self.own_candidate_generator(*args, **kwargs)
        prompt_length, propose = kwargs["input_ids"].shape[1], generator.get_candidates

        def get_candidates(input_ids, **more):
            return (input_ids, None) if input_ids.shape[1] <= prompt_length else propose(input_ids, **more)

        generator.get_candidates = get_candidates
        return generator

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        if not self._direct(input_ids, attention_mask, cache, inputs_embeds, labels, logits_to_keep, kwargs):
            return self.own_forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    cache=cache, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
                                    logits_to_keep=logits_to_keep, **kwargs)
        held, self.held = self.held, None
        if held is not None and cache.get_seq_length() == held.position and int(input_ids[0, 0]) == held.token:
            return self._after_held(held, input_ids, position_ids, cache, logits_to_keep)
        return CausalLMOutputWithPast(logits=self._logits(input_ids, position_ids, cache, logits_to_keep), cache=cache)

    def _after_held(self, held: "HeldToken", input_ids, position_ids, cache, logits_to_keep: int):
        """A pass that starts with the held token: its keys and values go into the cache as computed in the
        prompt pass, and only the rows after it (prompt lookup's proposals, if any) are computed."""
        for index, (key, value) in enumerate(held.keys_values):
            cache.update(key, value, index)
        rest = input_ids.shape[1] - 1
        if rest == 0:
            return CausalLMOutputWithPast(logits=held.logits, cache=cache)
        keep = min(logits_to_keep, rest) if logits_to_keep else rest
        logits = self._logits(input_ids[:, 1:], None if position_ids is None else position_ids[..., 1:], cache, keep)
        if not logits_to_keep or logits_to_keep > rest:
            logits = torch.cat([held.logits, logits], dim=1)
        return CausalLMOutputWithPast(logits=logits, cache=cache)

    def _logits(self, input_ids, position_ids, cache, logits_to_keep: int) -> torch.Tensor:
        body = self.model.model
        hidden = body.embed_tokens.forward(input_ids)
        if position_ids is None:
            past = cache.get_seq_length()
            position_ids = torch.arange(past, past + input_ids.shape[1]).unsqueeze(0)
        cos, sin = body.rotary_emb(hidden, position_ids=position_ids)
        rotation = cos.unsqueeze(1), sin.unsqueeze(1)  # (batch, 1, rows, head_dim): every layer's heads share it
        for layer in body.layers[:self.model.config.num_hidden_layers]:
            hidden = decoder_layer(layer, hidden, rotation, cache)
        hidden = body.norm.forward(hidden)
        if logits_to_keep:  # an int here: the last positions, as transformers' slice_logits_to_keep takes them
            hidden = hidden[:, -logits_to_keep:, :]
        return self.model.lm_head.forward(hidden)

    @staticmethod
    def _direct(input_ids, attention_mask, cache, inputs_embeds, labels, logits_to_keep, kwargs) -> bool:
        """One row of ids after a cache, every position visible, and nothing more than logits asked for."""
        if input_ids is None or inputs_embeds is not None or labels is not None or cache is None:
            return False
        if input_ids.shape[0] != 1 or not isinstance(logits_to_keep, int) or any(kwargs.get(k) for k in ASKS_FOR_MORE):
            return False
        return attention_mask is None or bool(attention_mask.all())


class HeldToken:
    """The prompt's last token as the prompt pass computed it: position, id, each layer's keys and values, logits."""

    __slots__ = ("position", "token", "keys_values", "logits")

    def __init__(self, position: int, token: int, keys_values: list, logits: torch.Tensor):
        self.position, self.token, self.keys_values, self.logits = position, token, keys_values, logits


def decoder_layer(layer: LlamaDecoderLayer, hidden: torch.Tensor, rotation, cache) -> torch.Tensor:
    """`LlamaDecoderLayer.forward` on the row attention without a mask (every key visible), call for call;
    `rotation` is the pass's (cos, sin) as `apply_rotary_pos_emb` unsqueezes them."""
    attention = layer.self_attn
    residual = hidden
    hidden = layer.input_layernorm.forward(hidden)
    input_shape = hidden.shape[:-1]
    hidden_shape = (*input_shape, -1, attention.head_dim)  # (batch, rows, heads, head_dim)
    query = attention.q_proj.forward(hidden).view(hidden_shape).transpose(1, 2)
    key = attention.k_proj.forward(hidden).view(hidden_shape).transpose(1, 2)
    value = attention.v_proj.forward(hidden).view(hidden_shape).transpose(1, 2)
    cos, sin = rotation
    query, key = (query * cos) + (rotate_half(query) * sin), (key * cos) + (rotate_half(key) * sin)
    key, value = cache.update(key, value, attention.layer_idx)
    output, _ = row_attention(attention, query, key, value, None, attention.scaling)
    hidden = residual + attention.o_proj.forward(output.reshape(*input_shape, -1).contiguous())
    residual = hidden
    hidden = layer.post_attention_layernorm.forward(hidden)
    mlp = layer.mlp
    gated = mlp.act_fn.forward(mlp.gate_proj.forward(hidden)) * mlp.up_proj.forward(hidden)
    return residual + mlp.down_proj.forward(gated)
