"""What a user would write without hftoolkit, the way transformers' `run_clm.py` and the fine-tuning docs teach.

Text: tokenize every line, concatenate, cut into `block_size` groups (`group_texts`, remainder dropped),
`default_data_collator`, plain `Trainer` in fp32. QA: each example rendered with the chat template and
padded to `max_length`, answer-only labels, peft LoRA with the same settings as the recipe. The
hyperparameters (lr, schedule, warmup, weight decay, seed, batch) are the recipe's, so only the pipeline
differs. Written for this benchmark; nothing of hftoolkit's pipeline is used.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path


def training_arguments(out: Path, training, max_steps: int):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=training.batch_size * training.gradient_accumulation,
        learning_rate=training.learning_rate, weight_decay=training.weight_decay,
        warmup_steps=training.warmup_ratio, lr_scheduler_type=training.lr_scheduler, max_steps=max_steps,
        seed=training.seed, data_seed=training.seed, logging_steps=training.logging_steps, save_strategy="no",
        report_to="none", use_cpu=True, include_num_input_tokens_seen="non_padding")


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
    from datasets import Dataset

    def encode(row):
        prompt = [{"role": "system", "content": system_prompt}, {"role": "user", "content": row["question"]}]
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": row["answer"]}],
                                             tokenize=True, return_dict=False)[:max_length]
        pad = max_length - len(full)
        labels = [-100] * len(prompt_ids) + full[len(prompt_ids):]
        return {"input_ids": full + [tokenizer.pad_token_id] * pad, "attention_mask": [1] * len(full) + [0] * pad,
                "labels": labels[:len(full)] + [-100] * pad}

    return Dataset.from_list(rows).map(encode, remove_columns=["question", "answer", "key_facts"])


def train(model, tokenizer, dataset, out: Path, training, max_steps: int, measure=None):
    """(trainer, train metrics) for a plain Trainer run; the model is saved as run_clm does. `measure`
    (the benchmark's meter) may wrap the collator and add a callback; it changes no computation."""
    from transformers import Trainer, default_data_collator

    collate, callbacks = default_data_collator, []
    if measure is not None:
        collate, callbacks = measure.wrap(collate, model), [measure.callback()]
    trainer = Trainer(model=model, args=training_arguments(out, training, max_steps), train_dataset=dataset,
                      data_collator=collate, processing_class=tokenizer, callbacks=callbacks)
    if measure is not None:
        measure.watch(trainer)
    result = trainer.train()
    trainer.save_model()
    return trainer, result.metrics
