"""What a user would write without hftoolkit, the way transformers' `run_clm.py` and the fine-tuning docs teach.

Text: tokenize every line, concatenate, cut into `block_size` groups (`group_texts`, remainder dropped),
`default_data_collator`, plain `Trainer`. QA: each example rendered with the chat template, answer-only labels,
padded per batch to its longest example (`DataCollatorForSeq2Seq`, labels padded with -100), peft LoRA with the
same settings as the recipe. Precision as a practitioner sets it: `bf16=True` (run_clm's `--bf16`) where the
CPU has bf16 instructions or a GPU supports it, fp32 elsewhere. The hyperparameters (lr, schedule, warmup,
weight decay, seed, batch) are the recipe's, so only the pipeline differs. Written for this benchmark; nothing
of hftoolkit's pipeline is used.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path


def best_precision() -> str:
    """What a practitioner passes: `--bf16` where the hardware has bf16 (CPU instructions or a GPU), else fp32."""
    import torch

    from hftoolkit.train.precision import cpu_has_bf16_instructions

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16_instructions() else "fp32"


def training_arguments(out: Path, training, max_steps: int, precision: str = "fp32"):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=training.batch_size * training.gradient_accumulation,
        learning_rate=training.learning_rate, weight_decay=training.weight_decay,
        warmup_steps=training.warmup_ratio, lr_scheduler_type=training.lr_scheduler, max_steps=max_steps,
        seed=training.seed, data_seed=training.seed, logging_steps=training.logging_steps, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), bf16=precision == "bf16",
        include_num_input_tokens_seen="non_padding")


def group_texts(examples: dict, block_size: int) -> dict:
    joined = {k: list(chain(*examples[k])) for k in examples}
    total = (len(joined["input_ids"]) // block_size) * block_size
    result = {k: [t[i:i + block_size] for i in range(0, total, block_size)] for k, t in joined.items()}
    result["labels"] = [ids[:] for ids in result["input_ids"]]
    return result


def text_dataset(files: list[str], tokenizer, block_size: int):
    from datasets import load_dataset

    raw = load_dataset("text", data_files={"train": files}, keep_linebreaks=True)["train"]
    tokenized = raw.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True, fn_kwargs={"block_size": block_size})


def qa_dataset(rows: list[dict], tokenizer, system_prompt: str, max_length: int):
    """Unpadded examples (truncated to `max_length`); the collator pads each batch to its longest."""
    from datasets import Dataset

    def encode(row):
        prompt = [{"role": "system", "content": system_prompt}, {"role": "user", "content": row["question"]}]
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": row["answer"]}],
                                             tokenize=True, return_dict=False)[:max_length]
        labels = [-100] * len(prompt_ids) + full[len(prompt_ids):]
        return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels[:len(full)]}

    return Dataset.from_list(rows).map(encode, remove_columns=["question", "answer", "key_facts"])


def train(model, tokenizer, dataset, out: Path, training, max_steps: int, measure=None, precision: str = "fp32",
          padded_per_batch: bool = False):
    """(trainer, train metrics) for a plain Trainer run; the model is saved as run_clm does. `measure`
    (the benchmark's meter) may wrap the collator and add a callback; it changes no computation."""
    from transformers import DataCollatorForSeq2Seq, Trainer, default_data_collator

    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100) if padded_per_batch else \
        default_data_collator
    callbacks = []
    if measure is not None:
        collate, callbacks = measure.wrap(collate, model), [measure.callback()]
    trainer = Trainer(model=model, args=training_arguments(out, training, max_steps, precision),
                      train_dataset=dataset, data_collator=collate, processing_class=tokenizer, callbacks=callbacks)
    if measure is not None:
        measure.watch(trainer)
    result = trainer.train()
    trainer.save_model()
    return trainer, result.metrics
