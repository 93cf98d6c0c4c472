"""Generation layers (`Generator.speed_up`): row-consistent attention and packed bf16 or fp32 linears.

Both must compute what transformers' own layers compute, and round a token's row alike in every forward pass
that holds it, which is what lets prompt-lookup decoding keep plain greedy's ids. A tiny random Llama keeps
these fast; `test_real_smollm2.py` checks the ids on real answers.
"""

import pytest
import torch

from hftoolkit.generate.packed_linear import PackedLinear, PartOfShared, SharedInputLinears, can_pack, pack_linears
from hftoolkit.generate.row_attention import use_row_attention

BLOCK = 64  # prompt lengths around a multiple of 64 (where an earlier row attention changed its key blocks)


def tiny_llama(dtype=torch.float32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config).to(dtype).eval()


def logits(model, ids, mask=None):
    with torch.inference_mode():
        return model(ids, attention_mask=mask).logits


def test_row_attention_computes_what_sdpa_computes_at_any_prompt_length_and_with_left_padding():
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
    assert engine.rows_consistent and sum(isinstance(m, PackedLinear) for m in model.modules()) == 9  # 2 x 4 + head
    assert isinstance(model.model.layers[0].self_attn.k_proj, PartOfShared)
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


def test_siblings_packed_as_one_weight_give_each_layer_its_own_output_in_any_order():
    torch.manual_seed(0)
    model = smollm2_wide_llama()
    attention = model.model.layers[0].self_attn
    plain = [attention.q_proj, attention.k_proj, attention.v_proj]
    if not can_pack(model):
        assert pack_linears(model) == 0 and attention.q_proj is plain[0]
        return
    assert pack_linears(model) == 15 and isinstance(attention.v_proj, PartOfShared)
    shared = attention.q_proj.shared
    assert isinstance(shared, SharedInputLinears) and shared is attention.v_proj.shared
    x, y = torch.randn(2, 1, 7, 576, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = {(name, which): layer(inputs) for name, layer in zip("qkv", plain)
                    for which, inputs in (("x", x), ("y", y))}
        got = {("v", "x"): attention.v_proj(x), ("q", "y"): attention.q_proj(y), ("q", "x"): attention.q_proj(x),
               ("k", "x"): attention.k_proj(x), ("k", "y"): attention.k_proj(y), ("v", "y"): attention.v_proj(y)}
        x.add_(1)  # changed in place: computed anew
        changed = attention.k_proj(x)
        expected_changed = plain[1](x)
        attention.q_proj(x), attention.v_proj(x)
    for key, output in got.items():
        assert output.shape == expected[key].shape, key
        assert torch.allclose(output.float(), expected[key].float(), atol=0.05, rtol=0.02), key
    assert torch.allclose(changed.float(), expected_changed.float(), atol=0.05, rtol=0.02)
    assert shared.held.output is None and shared.held.input is None  # nothing held once every sibling took its part


def test_row_check_accepts_rows_alike_and_refuses_rows_that_depend_on_the_pass(monkeypatch):
    from hftoolkit.generate import row_attention as rows

    assert rows.rows_alike(9, 3, 64) and rows.rows_alike(4, 2, 16, torch.float32)  # SmolLM2's heads; tiny_llama's
    alike = rows.row_attention

    def by_pass(module, query, key, value, attention_mask, scaling, **kwargs):  # a last bit that depends on the pass
        output, _ = alike(module, query, key, value, attention_mask, scaling)
        return output + (query.shape[2] > 1) * output.abs().max() * 2 ** -7, None

    monkeypatch.setattr(rows, "row_attention", by_pass)
    assert not rows.rows_alike(9, 3, 64)
    model = tiny_llama()
    assert not rows.use_row_attention(model) and model.config._attn_implementation == "sdpa"


def test_fp32_generation_packs_its_linears_where_the_cpu_has_no_bf16_instructions_and_keeps_the_ids():
    """fp32 generation on a CPU without bf16 instructions: linear layers through oneDNN's fp32 kernel (faster one-
    and few-row passes), one greedy answer's passes after its prompt on the row attention and unwrapped. No row
    consistency is claimed (fp32 rows differ in the last bits by pass, as torch's own layers' do); the logits stay
    transformers' within fp32 rounding, and greedy ids, with and without prompt lookup, stay theirs."""
    import copy

    from hftoolkit.generate.decode_pass import DecodePass
    from hftoolkit.generate.engine import Generator
    from hftoolkit.train.precision import cpu_has_bf16_instructions

    model = tiny_llama(seed=3)
    reference = copy.deepcopy(model)
    engine = Generator.__new__(Generator)  # speed_up() needs the model only; this test feeds token ids
    engine.model = model
    engine.speed_up()
    packed = sum(isinstance(m, PackedLinear) for m in model.modules())
    if cpu_has_bf16_instructions() or not torch.backends.mkldnn.is_available():  # fp32 keeps torch's layers there
        assert not can_pack(model) and packed == 0 and type(model.lm_head) is torch.nn.Linear
        assert not engine.row_passes and model.config._attn_implementation == "sdpa"
        return
    assert can_pack(model) and packed == 9  # per layer: q/k/v as one, o, gate/up as one, down; and the head
    assert isinstance(model.model.layers[1].mlp.up_proj, PartOfShared) and model.lm_head.tile == 1
    assert engine.row_passes and not engine.rows_consistent and isinstance(engine.decode_pass, DecodePass)
    ids = torch.randint(3, 300, (1, 150))
    model.set_attn_implementation("sdpa")  # as run_generate sets it for prompts
    for rows in (1, 3, 6, 150):  # a decode pass, prompt-lookup checks, a prompt
        got, expected = logits(model, ids[:, :rows]), logits(reference, ids[:, :rows])
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (rows, (got - expected).abs().max())
    prompt = torch.randint(3, 300, (1, 90))
    prompt[0, 60:70] = prompt[0, 10:20]  # something for prompt lookup to find
    inputs = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}
    settings = {"max_new_tokens": 40, "min_new_tokens": 40, "do_sample": False, "num_beams": 1}
    with torch.inference_mode():
        expected = reference.generate(**inputs, **settings)[0, 90:].tolist()
        plain = engine.run_generate(inputs, dict(settings))[0, 90:].tolist()
        looked_up = engine.run_generate(inputs, {**settings, "prompt_lookup_num_tokens": 5})[0, 90:].tolist()
    assert plain == expected and looked_up == expected
