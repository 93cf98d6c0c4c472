"""Packed blocks with per-document position ids: each document's logits equal its logits run alone."""

import pytest
import torch

from hftoolkit.data.pack import pack_blocks, packed_inputs
from hftoolkit.train.packed import documents_kept_apart, second_document

DOCS = [[5, 17, 42, 9, 300, 2], [7, 8, 99, 1000, 31, 64, 12, 2], [400, 401, 2]]  # 17 tokens


def tiny(architecture: str, attn: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {"gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64),
             "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, max_position_embeddings=64)}[architecture]
    torch.manual_seed(0)
    config = AutoConfig.for_model(architecture, vocab_size=1024, **sizes)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def smollm2(attn: str):
    from transformers import AutoModelForCausalLM

    from hftoolkit.models.registry import pull

    return AutoModelForCausalLM.from_pretrained(str(pull("smollm2-135m-instruct", log=lambda m: None)),
                                                attn_implementation=attn).eval()


def test_position_ids_restart_per_document_and_at_padding():
    blocks = pack_blocks({"input_ids": DOCS}, block_size=12, pad_id=0)
    assert blocks["position_ids"] == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5],
                                      [0, 1, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6]]  # doc 2's rest restarts; 7 pads
    assert second_document(blocks["position_ids"][1]) == (2, 5)


@pytest.mark.parametrize("make", [
    lambda: tiny("gpt2", "sdpa"), lambda: tiny("gpt2", "eager"),
    lambda: tiny("llama", "sdpa"), lambda: tiny("llama", "eager"),
    lambda: smollm2("sdpa"),
], ids=["gpt2-sdpa", "gpt2-eager", "llama-sdpa", "llama-eager", "smollm2-sdpa"])
def test_packed_block_logits_equal_each_document_alone(make):
    model = make()
    blocks = pack_blocks({"input_ids": DOCS}, block_size=24, pad_id=0)  # one block: 3 documents, 7 pads
    batch = {k: torch.tensor(v) for k, v in blocks.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**packed_inputs(batch)).logits[0]
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
        start = 0
        for doc in DOCS:
            alone = model(input_ids=torch.tensor([doc])).logits[0]
            got = packed[start:start + len(doc)]
            assert torch.allclose(got, alone, atol=1e-4, rtol=1e-4), (start, (got - alone).abs().max())
            if start:  # the old packing let later documents see earlier ones: the test can tell
                assert (plain[start:start + len(doc)] - alone).abs().max() > 1e-3
            start += len(doc)
    assert documents_kept_apart(model, batch)


LONG_DOCS = [list(range(10, 70)), list(range(100, 170)), list(range(200, 250))]  # longer than the check's window


@pytest.mark.parametrize("docs,block", [(DOCS, 24), (LONG_DOCS, 64)], ids=["short", "longer-than-the-window"])
def test_the_check_catches_a_model_that_mixes_documents(docs, block):
    model = tiny("llama", "sdpa")
    blocks = pack_blocks({"input_ids": docs}, block_size=block, pad_id=0)
    batch = {k: torch.tensor(v) for k, v in blocks.items() if k != "labels"}
    assert documents_kept_apart(model, batch)

    class IgnoresPositions(torch.nn.Module):  # masks with a plain causal mask, as a model with its own masking might
        def forward(self, input_ids, position_ids=None, **kwargs):
            return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))

    assert not documents_kept_apart(IgnoresPositions(), batch)


def test_the_check_sees_through_accelerates_bf16_autocast():
    # bf16 training wraps the model's forward in accelerate's autocast; the check must still compare in fp32,
    # or bf16 rounding alone reads as a leak and every bf16 run trains with the plain mask (it did, at the size
    # of the bundled from-scratch GPT below, before the check unwrapped the forward)
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=2048, n_embd=192, n_layer=4, n_head=4, n_positions=128)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = Accelerator(mixed_precision="bf16", cpu=True).prepare(model).eval()
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(0, 2048, (n,), generator=generator).tolist() for n in (60, 70, 50)]
    blocks = pack_blocks({"input_ids": docs}, block_size=128, pad_id=0)
    batch = {k: torch.tensor(v) for k, v in blocks.items() if k != "labels"}
    with torch.no_grad():
        wrapped = model(input_ids=batch["input_ids"]).logits.float()
        plain = model._original_forward(input_ids=batch["input_ids"]).logits
    assert (wrapped - plain).abs().max() > 1e-3  # the forward the Trainer calls does compute in bf16
    assert documents_kept_apart(model, batch)
