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


def smollm2_wide_llama(seed: int = 1):
    """Two layers of SmolLM2-135M's widths (576 hidden, 1536 MLP, 9 heads on 3 key heads): a 1536-wide down
    projection is where an AVX-512 BF16 CPU without AMX rounded a row differently alone and among others."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=512)
    return LlamaForCausalLM(config).to(torch.bfloat16).eval()


@pytest.mark.parametrize("prompt_length", [40, BLOCK - 2, 2 * BLOCK + 5])
def test_tokens_after_the_prompt_are_rounded_alike_in_bf16_alone_or_checked_together(prompt_length):
    """The engine computes the prompt (all but its last token) by itself; then prompt lookup checks the last
    prompt token and up to 10 proposals in one pass, where plain decoding computes each token alone. Every
    such row must come out bit for bit the same (bf16), or the engine must not claim it."""
    from hftoolkit.generate.engine import Generator

    model = smollm2_wide_llama()
    engine = Generator.__new__(Generator)  # speed_up() needs the model only; these tests feed token ids
    engine.model = model
    engine.speed_up()
    if not can_pack(model):  # a CPU without bf16 instructions: torch's layers stay, bf16 decodes without lookup
        assert not engine.rows_consistent and type(model.lm_head) is torch.nn.Linear
        assert model.config._attn_implementation == "sdpa"
        return
    assert engine.rows_consistent and sum(isinstance(m, PackedLinear) for m in model.modules()) == 15
    ids = torch.randint(3, 300, (1, prompt_length + 11))
    with torch.inference_mode():
        def after_prompt():
            model.set_attn_implementation("sdpa")
            cache = model(ids[:, :prompt_length - 1], use_cache=True).past_key_values
            model.set_attn_implementation(engine.row_attention)
            return cache

        cache = after_prompt()
        together = model(ids[:, prompt_length - 1:], past_key_values=cache).logits  # 12 rows in one pass
        cache, alone = after_prompt(), []
        for position in range(prompt_length - 1, prompt_length + 11):  # one token at a time
            alone.append(model(ids[:, position:position + 1], past_key_values=cache).logits[:, -1])
        cache = after_prompt()
        firsts = model(ids[:, prompt_length - 1:prompt_length + 2], past_key_values=cache).logits  # a check of 3
    for offset, row in enumerate(alone):
        assert torch.equal(together[:, offset], row), offset
    assert torch.equal(firsts, together[:, :3])


def test_packed_linear_computes_what_linear_computes_and_rounds_rows_alike_in_any_check():
    from hftoolkit.generate.packed_linear import FEW_ROWS, rows_alike, tile_for

    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 576).to(torch.bfloat16)  # SmolLM2's down projection, with a bias
    model = torch.nn.Sequential(linear)
    model.device, model.dtype = torch.device("cpu"), torch.bfloat16
    if not can_pack(model):  # a CPU without bf16 instructions: nothing is replaced
        assert pack_linears(model) == 0 and type(model[0]) is torch.nn.Linear
        return
    tile = tile_for(linear)
    assert tile is not None, "no tile rounds this shape's rows alike on this CPU"
    packed = PackedLinear(linear, tile)
    assert rows_alike(packed)
    for rows in (1, 3, 6, 16, 150):
        x = torch.randn(1, rows, 1536, dtype=torch.bfloat16)
        assert torch.allclose(packed(x).float(), linear(x).float(), atol=0.05, rtol=0.02)
    x = torch.randn(1, FEW_ROWS, 1536, dtype=torch.bfloat16)
    for rows in range(2, FEW_ROWS + 1):  # a check of `rows` rows, or each row alone
        together = packed(x[:, :rows])
        assert all(torch.equal(together[:, row], packed(x[:, row:row + 1])[:, 0]) for row in range(rows)), rows
    assert pack_linears(model) == 1 and isinstance(model[0], PackedLinear) and model[0].tile == tile
