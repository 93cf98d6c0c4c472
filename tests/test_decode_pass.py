"""The passes after the prompt, unwrapped (`generate/decode_pass.py`): the model's own logits bit for bit, the
prompt's last token computed once in the prompt pass, and the same ids with and without prompt lookup.

A tiny random Llama in fp32 on the row attention keeps these fast and independent of the CPU's bf16 support;
`test_real_smollm2.py` checks real answers in bf16.
"""

import torch
from test_generation_layers import tiny_llama

from hftoolkit.generate.decode_pass import DecodePass, fits
from hftoolkit.generate.engine import Generator
from hftoolkit.generate.row_attention import NAME, use_row_attention


def prompt_cache(model, ids):
    """The cache of `ids` computed with sdpa, as the engine computes a prompt."""
    model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        cache = model(ids, use_cache=True).cache
    model.set_attn_implementation(NAME)
    return cache


def test_decode_pass_gives_the_models_own_logits_bit_for_bit_and_hands_on_what_it_leaves_out():
    model = tiny_llama(seed=3)
    assert use_row_attention(model) and fits(model)
    decode = DecodePass(model)
    ids = torch.randint(3, 300, (1, 90))
    for rows in (1, 6):
        with torch.inference_mode():
            own = model(ids[:, 80:80 + rows], cache=prompt_cache(model, ids[:, :80]), logits_to_keep=rows)
            unwrapped = decode.forward(input_ids=ids[:, 80:80 + rows], cache=prompt_cache(model, ids[:, :80]),
                                       logits_to_keep=rows)
        assert torch.equal(unwrapped.logits, own.logits), rows
        assert unwrapped.cache.get_seq_length() == 80 + rows
    # left padding is not this pass's case: the model's own forward computes it (the same logits as calling it)
    mask = torch.ones(1, 81, dtype=torch.long)
    mask[0, :5] = 0
    with torch.inference_mode():
        own = model(ids[:, 80:81], cache=prompt_cache(model, ids[:, :80]), attention_mask=mask)
        handed_on = decode.forward(input_ids=ids[:, 80:81], cache=prompt_cache(model, ids[:, :80]),
                                   attention_mask=mask)
    assert torch.equal(handed_on.logits, own.logits)


def test_other_architectures_keep_their_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, n_positions=128))
    assert not fits(gpt2)
    assert fits(tiny_llama())


def count_rows(model, rows: list) -> None:
    """Append the rows each pass through the layers computes (the rotary embedding runs once per such pass)."""
    model.model.rotary_emb.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["position_ids"].shape[1]), with_kwargs=True)


def engine_for(model) -> Generator:
    """An engine on the row attention with the unwrapped passes, as `speed_up` sets one up in bf16 (here fp32,
    so the test runs on any CPU); these tests feed token ids, so no tokenizer."""
    engine = Generator.__new__(Generator)
    engine.model = model
    assert use_row_attention(model)
    engine.rows_consistent = engine.row_passes = True
    engine.row_attention, engine.decode_pass = NAME, DecodePass(model)
    return engine


def test_prompt_pass_holds_the_last_token_and_greedy_ids_match_transformers_with_and_without_lookup():
    """Plain greedy on these passes gives transformers' own greedy ids (its prefill also computes the whole
    prompt at once); prompt lookup gives the same ids; the first answer token costs no pass of the layers."""
    model = tiny_llama(seed=4)
    prompt = torch.randint(3, 300, (1, 70))
    prompt[0, 50:62] = prompt[0, 5:17]  # something for prompt lookup to find
    inputs = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}
    settings = {"max_new_tokens": 24, "min_new_tokens": 24, "do_sample": False, "num_beams": 1}
    with torch.inference_mode():
        expected = model.generate(**inputs, **settings)[0, 70:].tolist()  # sdpa throughout
    engine = engine_for(model)
    rows = []  # rows each pass through the layers computes
    count_rows(model, rows)
    with torch.inference_mode():
        plain = engine.run_generate(inputs, dict(settings))[0, 70:].tolist()
        plain_rows, rows[:] = list(rows), []
        looked_up = engine.run_generate(inputs, {**settings, "prompt_lookup_num_tokens": 5})[0, 70:].tolist()
    assert plain == expected and looked_up == expected
    assert plain_rows == [70] + [1] * 23  # the prompt, then one pass per token after the first (held from it)
    assert max(rows[1:]) > 1 and len(rows) <= len(plain_rows)  # proposals were checked, in no more passes
    assert engine.decode_pass.held is None and "forward" not in vars(model)  # nothing left behind
    assert "_get_candidate_generator" not in vars(model)


def test_first_pass_with_prompt_lookup_proposes_nothing():
    """The prompt ends where the answer starts: lookup proposes nothing there, so the pass that takes the held
    token computes nothing, and the next computes that one token's row."""
    model = tiny_llama(seed=5)
    prompt = torch.randint(3, 300, (1, 40))
    prompt[0, -1] = prompt[0, 10]  # the last prompt token occurs earlier: transformers would propose after it
    engine = engine_for(model)
    rows = []  # rows each pass through the layers computes
    count_rows(model, rows)
    with torch.inference_mode():
        engine.run_generate({"input_ids": prompt, "attention_mask": torch.ones_like(prompt)},
                            {"max_new_tokens": 2, "min_new_tokens": 2, "do_sample": False, "num_beams": 1,
                             "prompt_lookup_num_tokens": 5})
    assert rows == [40, 1]  # the whole prompt, then the first answer token (its proposals came after it)
