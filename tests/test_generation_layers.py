"""Generation layers (`Generator.speed_up`): row-consistent attention and packed bf16 linears.

Both must compute what transformers' own layers compute, and round a token's row alike in every forward pass
that holds it, which is what lets prompt-lookup decoding keep plain greedy's ids. A tiny random Llama keeps
these fast; `test_real_smollm2.py` checks the ids on real answers.
"""

import pytest
import torch

from hftoolkit.generate.packed_linear import PackedLinear, can_pack, pack_linears
from hftoolkit.generate.row_attention import BLOCK, use_row_attention


def tiny_llama(dtype=torch.float32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config).to(dtype).eval()


def logits(model, ids, mask=None):
    with torch.inference_mode():
        return model(ids, attention_mask=mask).logits


def test_row_attention_computes_what_sdpa_computes_over_several_blocks_and_with_left_padding():
    model = tiny_llama()
    ids = torch.randint(3, 300, (2, 2 * BLOCK + 22))
    mask = torch.ones_like(ids)
    mask[1, :37] = 0  # the second row is left-padded
    before = logits(model, ids, mask)
    assert use_row_attention(model)
    after = logits(model, ids, mask)
    assert torch.allclose(before[0], after[0], atol=1e-5), (before[0] - after[0]).abs().max()
    assert torch.allclose(before[1, 37:], after[1, 37:], atol=1e-5), (before[1, 37:] - after[1, 37:]).abs().max()
    assert torch.isfinite(after).all()  # padded rows see nothing: no NaN


def test_greedy_ids_with_row_attention_equal_sdpa_and_prompt_lookup_keeps_them():
    model = tiny_llama()
    prompt = torch.randint(3, 300, (1, 90))
    prompt[0, 60:70] = prompt[0, 10:20]  # something for prompt lookup to find
    settings = {"max_new_tokens": 40, "min_new_tokens": 40, "do_sample": False}
    with torch.inference_mode():
        sdpa = model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
        use_row_attention(model)
        rows = model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
        looked_up = model.generate(prompt, attention_mask=torch.ones_like(prompt), prompt_lookup_num_tokens=5,
                                   **settings)
    assert rows.tolist() == sdpa.tolist()
    assert looked_up.tolist() == rows.tolist()


@pytest.mark.parametrize("prompt_length", [40, BLOCK - 2, 2 * BLOCK + 5])
def test_a_row_is_rounded_alike_in_bf16_alone_with_later_rows_or_inside_the_prompt(prompt_length):
    """Prompt lookup computes the prompt with the first proposals, and checks proposals several at a time;
    plain decoding computes each token alone. Every row must come out bit for bit the same (bf16, AMX)."""
    from hftoolkit.generate.engine import Generator

    model = tiny_llama(torch.bfloat16, seed=1)
    engine = Generator.__new__(Generator)  # speed_up() needs the model only; these tests feed token ids
    engine.model = model
    engine.speed_up()
    if not can_pack(model):  # a CPU without AMX: torch's layers stay, and bf16 decodes without prompt lookup
        assert not engine.rows_consistent and type(model.lm_head) is torch.nn.Linear
        assert model.config._attn_implementation == "sdpa"
        return
    assert engine.rows_consistent and sum(isinstance(m, PackedLinear) for m in model.modules()) == 15
    ids = torch.randint(3, 300, (1, prompt_length + 6))
    with torch.inference_mode():
        together = model(ids).logits  # the prompt and six more tokens in one pass
        prompt = model(ids[:, :prompt_length], use_cache=True)
        cache, alone = prompt.past_key_values, [prompt.logits[:, -1]]
        for position in range(prompt_length, prompt_length + 5):  # then one token at a time
            step = model(ids[:, position:position + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            alone.append(step.logits[:, -1])
    for offset, row in enumerate(alone):
        assert torch.equal(together[:, prompt_length - 1 + offset], row), offset
    assert torch.equal(together[:, :prompt_length], prompt.logits)


def test_packed_linear_computes_what_linear_computes_and_rounds_rows_alike_in_any_pass():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160).to(torch.bfloat16)
    model = torch.nn.Sequential(linear)
    model.device, model.dtype = torch.device("cpu"), torch.bfloat16
    if not can_pack(model):  # a CPU without AMX: nothing is replaced
        assert pack_linears(model) == 0 and type(model[0]) is torch.nn.Linear
        return
    packed = PackedLinear(linear)
    for rows in (1, 6, 150):
        x = torch.randn(1, rows, 96, dtype=torch.bfloat16)
        assert torch.allclose(packed(x).float(), linear(x).float(), atol=0.02, rtol=0.02)
    x = torch.randn(1, 200, 96, dtype=torch.bfloat16)
    assert torch.equal(packed(x)[:, :150], packed(x[:, :150]))  # a prompt alone, or with proposals after it
    assert torch.equal(packed(x)[:, 190:191], packed(x[:, 190:191]))
    assert torch.equal(packed(x[:, :6])[:, 2:3], packed(x[:, 2:3]))  # a check of six rows, or one row
    assert pack_linears(model) == 1 and isinstance(model[0], PackedLinear)
