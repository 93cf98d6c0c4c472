"""Recipe → transformers TrainingArguments."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.checkpoint.output_dir import TRAINER_DIR
from hftoolkit.recipe.schema import TrainingSection
from hftoolkit.train.distributed import global_batch, world_size


def training_arguments(training: TrainingSection, out: Path, precision: str, variable_length: bool = False,
                       batch_metrics: bool = False, config_class=None, max_steps: int | None = None, **extra):
    """transformers' TrainingArguments, or `config_class` (a TRL config, which subclasses it) with `extra` fields."""
    import torch
    from transformers import TrainingArguments

    early = training.early_stopping_patience is not None
    return (config_class or TrainingArguments)(
        output_dir=str(out / TRAINER_DIR),
        num_train_epochs=training.epochs,
        max_steps=training.max_steps if max_steps is None else max_steps,  # set from training.max_tokens
        # the recipe's batch is global: with N processes each takes consecutive batch/N slices of the same
        # seeded order, so every full optimizer step sees the examples one process would
        per_device_train_batch_size=global_batch(training.batch_size, "training.batch_size") // world_size(),
        per_device_eval_batch_size=max(1, training.eval_batch_size // world_size()),
        gradient_accumulation_steps=training.gradient_accumulation,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio
        lr_scheduler_type=training.lr_scheduler,
        max_grad_norm=training.max_grad_norm,
        eval_strategy="steps",
        eval_steps=training.eval_steps,
        eval_on_start=training.eval_on_start,  # the step-0 eval is the baseline the run is judged against
        logging_steps=training.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training.eval_steps if early else training.save_steps,
        save_total_limit=None,  # train/stopping.py rotates, after marking the new checkpoint complete
        load_best_model_at_end=early,
        metric_for_best_model=training.best_metric if early else None,
        greater_is_better=(training.best_metric == "answer_accuracy") if early else None,
        bf16=precision == "bf16",
        seed=training.seed,
        data_seed=training.seed,
        report_to="none",  # TensorBoard is attached by build_trainer with an explicit log folder
        include_num_input_tokens_seen="non_padding",  # real tokens, padding excluded
        activation_checkpointing=training.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        batch_eval_metrics=batch_metrics,  # metrics accumulate per batch: no eval-set logits kept
        # variable-length examples: batch similar lengths together so little compute goes to padding
        train_sampling_strategy=extra.pop("train_sampling_strategy",
                                          "group_by_length" if variable_length else "random"),
        disable_tqdm=False,
        **extra,
    )

