"""The cheaper CPU training pieces: the same dropout statistics, the same model outside training, documents
still kept apart, nothing of it in the saved checkpoint."""

import json

import pytest
import torch

from hftoolkit.data.pack import pack_blocks, packed_inputs
from hftoolkit.train import cpu_kernels
from hftoolkit.train.packed import documents_kept_apart

DOCS = [[5, 17, 42, 9, 300, 2], [7, 8, 99, 1000, 31, 64, 12, 2], [400, 401, 2]]


def tiny(architecture: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    sizes = {"gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64),
             "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=64)}[architecture]
    torch.manual_seed(0)
    config = AutoConfig.for_model(architecture, vocab_size=1024, **sizes)
    head = AutoModelForCausalLM if architecture == "gpt2" else AutoModelForMaskedLM
    return head.from_config(config, attn_implementation="sdpa")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_drops_each_element_with_probability_p_and_rescales(p):
    torch.manual_seed(0)
    mask = cpu_kernels.keep_mask(torch.Size([1000, 1000]), p, torch.float32)
    dropped = float((mask == 0).float().mean())
    assert abs(dropped - p) < 5 * (p * (1 - p) / 1e6) ** 0.5  # five standard deviations
    assert torch.unique(mask).tolist() == [0.0, pytest.approx(1 / (1 - p), rel=1e-4)]
    assert abs(float(mask.mean()) - 1) < 0.01  # the expectation is kept, as nn.Dropout does
    rows = (mask == 0).float().mean(dim=1)  # no structure: every row drops about p, not whole lanes
    assert float(rows.min()) > p - 0.06 and float(rows.max()) < p + 0.06


def test_keep_mask_follows_torch_seed():
    def draw(seed):
        torch.manual_seed(seed)
        return cpu_kernels.keep_mask(torch.Size([64, 64]), 0.1, torch.bfloat16)
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


@pytest.mark.parametrize("architecture", ["gpt2", "bert"])
def test_swaps_leave_the_model_unchanged_outside_training(architecture):
    model = tiny(architecture).eval()
    ids = torch.randint(0, 1024, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    changed = cpu_kernels.use_cpu_kernels(model)
    assert changed[0] == "7 dropout layers with a cheaper mask" and changed[-1] == "attention dropout with the same mask"
    assert ("2 tanh GELUs fused" in changed) == (architecture == "gpt2")
    assert model.config._attn_implementation == cpu_kernels.NAME
    assert all(not m.training for m in model.modules())  # swapped-in layers keep eval mode
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(before[mask.bool()], after[mask.bool()], atol=1e-5)
    model.train()
    torch.manual_seed(3)
    trained = model(input_ids=ids, attention_mask=mask).logits
    assert (trained - after).abs().max() > 1e-2  # dropout is on while training
    cpu_kernels.restore(model)
    assert model.config._attn_implementation == "sdpa"


def test_attention_with_dropout_is_masked_softmax_times_values():
    module = torch.nn.Module().train()
    module.is_causal = True
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 10, 8) for _ in range(3))
    torch.manual_seed(5)
    got, _ = cpu_kernels.attention(module, query, key, value, None, dropout=0.2)
    torch.manual_seed(5)
    keep = cpu_kernels.keep_mask(torch.Size([2, 4, 10, 10]), 0.2, torch.float32)
    scores = (query @ key.transpose(-1, -2)) / 8 ** 0.5
    scores = scores.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), float("-inf"))
    expected = ((scores.softmax(-1) * keep) @ value).transpose(1, 2)
    assert torch.allclose(got, expected, atol=1e-5)
    module.eval()  # without dropout it is sdpa itself
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain, _ = sdpa_attention_forward(module, query, key, value, None, dropout=0.0)
    assert torch.allclose(cpu_kernels.attention(module, query, key, value, None)[0], plain, atol=1e-6)


def test_packed_documents_stay_apart_while_training_with_dropout():
    model = tiny("gpt2")
    cpu_kernels.use_cpu_kernels(model)
    blocks = pack_blocks({"input_ids": DOCS}, block_size=24, pad_id=0)
    batch = {k: torch.tensor(v) for k, v in blocks.items() if k != "labels"}
    model.eval()
    assert documents_kept_apart(model, batch)
    model.train()
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][0, :len(DOCS[0])] = 11  # a different first document
    torch.manual_seed(9)
    logits = model(**packed_inputs(batch)).logits[0]
    torch.manual_seed(9)  # the same dropout masks
    changed = model(**packed_inputs(other)).logits[0]
    start = len(DOCS[0])
    assert (logits[:start] - changed[:start]).abs().max() > 1e-3
    assert torch.allclose(logits[start:], changed[start:], atol=1e-5)  # later documents never saw it


def test_saved_checkpoint_knows_nothing_of_the_swaps(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny("gpt2")
    cpu_kernels.use_cpu_kernels(model)
    cpu_kernels.restore(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert cpu_kernels.NAME not in json.dumps(config) and config["activation_function"] == "gelu_new"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    assert type(loaded.transformer.drop) is torch.nn.Dropout


def test_lora_layers_skip_the_fp32_round_trip_with_the_same_result_under_autocast():
    from peft import LoraConfig, get_peft_model

    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)  # a Llama: nothing else to swap, so any difference would be the casting's
    config = AutoConfig.for_model("llama", vocab_size=1024, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    base = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                            init_lora_weights=False))
    ids = torch.randint(0, 1024, (2, 16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits
    changed = cpu_kernels.use_cpu_kernels(model)
    assert changed == ["14 LoRA layers without the input's round trip to fp32",  # 2 layers x q k v o gate up down
                       "grouped-query attention without repeated keys and values"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)  # bit for bit: autocast casts to bf16 for the matmul either way
    cpu_kernels.restore(model)
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


def test_bf16_training_attention_by_matmuls_matches_sdpa_and_keeps_documents_apart():
    """Under bf16 autocast while training, short sequences take the matmul path: the same logits and
    gradients as sdpa (within bf16 rounding), padding and packed documents still masked."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)  # a Llama without attention dropout, as SmolLM2
    config = AutoConfig.for_model("llama", vocab_size=1024, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    ids = torch.randint(0, 1024, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding

    def logits_and_grad():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logits[mask.bool()].square().mean().backward()
        return logits.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    plain, plain_grad = logits_and_grad()
    assert cpu_kernels.use_cpu_kernels(model, bf16=True) == ["bf16 attention by matmuls up to 512 tokens",
                                                              "grouped-query attention without repeated keys and values"]
    assert model.config._attn_implementation == cpu_kernels.NAME
    calls = []
    matmul = torch.matmul
    torch.matmul = lambda *args: calls.append(1) or matmul(*args)  # noqa: E731 (count the attention products)
    try:
        swapped, swapped_grad = logits_and_grad()
    finally:
        torch.matmul = matmul
    assert len(calls) == 2 * 2  # two products in each of the two layers: the matmul path ran
    keep = mask.bool()
    assert (swapped[keep] - plain[keep]).abs().max() < 0.05 * plain[keep].abs().max()
    assert torch.nn.functional.cosine_similarity(swapped_grad.flatten(), plain_grad.flatten(), dim=0) > 0.99
    blocks = pack_blocks({"input_ids": DOCS}, block_size=24, pad_id=0)
    batch = {k: torch.tensor(v) for k, v in blocks.items() if k != "labels"}
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][0, :len(DOCS[0])] = 11  # a different first document
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first, second = (model(**packed_inputs(b)).logits[0].float() for b in (batch, other))
    start = len(DOCS[0])
    assert (first[:start] - second[:start]).abs().max() > 1e-3
    assert torch.equal(first[start:], second[start:])  # later documents never saw it
    cpu_kernels.restore(model)
    assert model.config._attn_implementation == "sdpa"


def test_grouped_query_attention_under_a_mask_repeats_no_keys_and_gives_the_same_step(monkeypatch):
    """fp32 training on packed documents (a boolean mask): sdpa takes the 2 key heads of 4 query heads as they
    are, where transformers repeats them; the logits and gradients are sdpa's own, documents stay apart."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import sdpa_attention

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", vocab_size=1024, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    blocks = pack_blocks({"input_ids": DOCS * 2}, block_size=24, pad_id=0)
    batch = packed_inputs({k: torch.tensor(v) for k, v in blocks.items()})
    repeats = []
    repeat_kv = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *args: repeats.append(1) or repeat_kv(*args))

    def step():
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return float(loss), model.model.layers[0].self_attn.k_proj.weight.grad.clone()

    plain_loss, plain_grad = step()
    assert len(repeats) == 2 * 2  # transformers repeats keys and values in each layer
    assert cpu_kernels.use_cpu_kernels(model) == ["grouped-query attention without repeated keys and values"]
    repeats.clear()
    loss, grad = step()
    assert repeats == []
    assert loss == pytest.approx(plain_loss, rel=1e-6) and torch.allclose(grad, plain_grad, atol=1e-6)
    model.eval()
    assert documents_kept_apart(model, batch)
    cpu_kernels.restore(model)
    assert model.config._attn_implementation == "sdpa"
