"""Losses the Trainer scales right: gradient accumulation with an encoder head's mean loss."""

import pytest
import torch
from datasets import Dataset


def first_step_grad_norm(tmp_path, batch_size: int, accumulation: int, loss_is_batch_mean: bool) -> float:
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from hftoolkit.train.trainer import PerplexityTrainer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(1)
    rows = Dataset.from_dict({"input_ids": torch.randint(1, 64, (8, 6), generator=generator).tolist(),
                              "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    args = TrainingArguments(output_dir=str(tmp_path / f"b{batch_size}"), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1e-3,
                             logging_steps=1, report_to="none", use_cpu=True, seed=0, save_strategy="no")
    trainer = PerplexityTrainer(model=model, args=args, train_dataset=rows, log_perplexity=False,
                                loss_is_batch_mean=loss_is_batch_mean)
    trainer.train()
    return next(h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h)


def test_accumulated_gradients_equal_one_big_batch(tmp_path):
    whole = first_step_grad_norm(tmp_path, 8, 1, loss_is_batch_mean=True)
    accumulated = first_step_grad_norm(tmp_path, 4, 2, loss_is_batch_mean=True)
    assert accumulated == pytest.approx(whole, rel=1e-4)
    # without telling the Trainer that the head's loss is a batch mean, accumulation doubles the gradient
    unscaled = first_step_grad_norm(tmp_path, 4, 2, loss_is_batch_mean=False)
    assert unscaled == pytest.approx(2 * whole, rel=1e-4)


def test_eval_loss_is_the_mean_over_labelled_tokens(tmp_path):
    """Batches whose answers differ in length: the eval loss is total NLL / labelled tokens, not the mean of
    per-batch means, so exp(eval_loss) is a token perplexity."""
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from hftoolkit.train.trainer import PerplexityTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    generator = torch.Generator().manual_seed(2)
    rows = []
    for answer_tokens in (1, 1, 12, 12):  # batch 1: short answers, batch 2: long ones
        ids = torch.randint(1, 50, (16,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (16 - answer_tokens) + ids[16 - answer_tokens:]})

    def collate(batch):
        return {k: torch.tensor([row[k] for row in batch]) for k in ("input_ids", "labels")}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none", use_cpu=True)
    reported = [PerplexityTrainer(model=model, args=args, eval_dataset=Dataset.from_list(rows), data_collator=collate,
                                  labelled_positions_loss=shortcut, token_mean_eval=True).evaluate()["eval_loss"]
                for shortcut in (True, False)]  # answer-only examples, and text blocks with the model's own loss

    def nll(batch):
        total, tokens = 0.0, 0
        with torch.no_grad():
            for row in batch:
                logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
                targets = torch.tensor(row["labels"][1:])
                keep = targets != -100
                total += float(torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum"))
                tokens += int(keep.sum())
        return total, tokens

    total, tokens = nll(rows)
    assert reported == pytest.approx([total / tokens] * 2, rel=1e-5)
    mean_of_batch_means = sum(t / n for t, n in (nll(rows[:2]), nll(rows[2:]))) / 2  # the Trainer's own figure
    assert abs(reported[0] - mean_of_batch_means) > 1e-3  # the data really tells the two apart


def test_labelled_positions_loss_trains_in_bf16_when_the_run_does(tmp_path):
    """The shortcut calls the decoder and the output layer itself, past the autocast accelerate puts on the
    model's forward: it must enter that autocast too, or a bf16 run trains its QA examples in fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from hftoolkit.train.trainer import PerplexityTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 50, (8, 16), generator=generator)
    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": [[-100] * 12 + r[12:] for r in ids.tolist()]})
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, output: seen.append((module.training, output.dtype)))
    used = []
    for precision in ("bf16", "fp32"):
        seen.clear()
        args = TrainingArguments(output_dir=str(tmp_path / precision), per_device_train_batch_size=4, max_steps=2,
                                 bf16=precision == "bf16", report_to="none", use_cpu=True, save_strategy="no")
        trainer = PerplexityTrainer(model=model, args=args, train_dataset=rows, labelled_positions_loss=True)
        trainer.train()
        assert trainer.labelled_positions  # the shortcut passed its fp32 check and trained
        used.append({dtype for training, dtype in seen if training})
    assert used == [{torch.bfloat16}, {torch.float32}]


def test_the_output_layer_loss_in_chunks_equals_the_whole_and_keeps_fewer_logits():
    """Same loss and gradients (fp32 rounding) whether the logits are made whole or a chunk at a time; and the
    chunked backward never holds more than one chunk's logits (peak memory measured by torch's allocator
    statistics is not available on CPU, so the saved tensors are counted)."""
    import torch

    from hftoolkit.train.loss import output_layer_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=False)
    hidden = torch.randn(700, 64, requires_grad=True)
    targets = torch.randint(0, 5000, (700,))
    whole = output_layer_loss(head, hidden, targets, chunk=10_000)
    whole.backward()
    want_hidden, want_head = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        chunked = output_layer_loss(head, hidden, targets, chunk=128)
    chunked.backward()
    assert torch.allclose(chunked, whole, rtol=1e-5)
    assert torch.allclose(hidden.grad, want_hidden, atol=1e-6) and torch.allclose(head.weight.grad, want_head,
                                                                                   atol=1e-5)
    assert max(saved) < 128 * 5000 + 1  # no saved tensor is bigger than one chunk's logits (700 x 5000 whole)
