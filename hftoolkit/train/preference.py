"""`training.method: dpo | kto`: preference tuning with TRL's trainers, into the same plain checkpoint folder.

The losses are TRL's (DPOTrainer, KTOTrainer); this module feeds them the recipe's rows as conversations
(`data.preference_rows`), the recipe's Trainer settings, precision and LoRA, and writes the result as every other
recipe does: merged weights, tokenizer with the chat template, model card, metrics, loss curve. With LoRA the
reference model is the same weights with the adapter switched off, so memory does not double; a full fine-tune
keeps a frozen copy as the reference.
"""

from __future__ import annotations

import time

from hftoolkit.allocator import describe
from hftoolkit.checkpoint.output_dir import (
    TRAINER_DIR,
    check_disk_space,
    check_output_dir,
    check_resume_matches,
    claim_output_dir,
    clear_run,
    last_trainer_checkpoint,
)
from hftoolkit.checkpoint.saved import saved_system_prompt
from hftoolkit.data.preference_rows import preference_examples
from hftoolkit.data.splits import load_data
from hftoolkit.errors import TrainingStopped, UserError
from hftoolkit.models.load import add_lora, load_pretrained, resolve_model_path
from hftoolkit.recipe.load import to_dict
from hftoolkit.recipe.schema import Recipe
from hftoolkit.retrieval.checkpoint_index import inherited_index_record
from hftoolkit.train import distributed
from hftoolkit.train.arguments import training_arguments
from hftoolkit.train.checks import check_before_training
from hftoolkit.train.distributed import is_main
from hftoolkit.train.metrics import headline
from hftoolkit.train.precision import resolve_precision
from hftoolkit.train.save import save_checkpoint
from hftoolkit.train.tensorboard import tensorboard_callback

REPORTED = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "kl")


def train_preference(recipe: Recipe, resume: bool = False, overwrite: bool = False, log=print,
                     force: bool = False) -> dict:
    """Run a dpo/kto recipe end to end; returns the metrics written to metrics.json."""
    check_before_training(recipe)
    out = check_output_dir(recipe.output.dir, resume, overwrite)
    distributed.wait_for_everyone()
    log = log if distributed.is_main() else (lambda message: None)
    started = time.time()
    data, method = recipe.data, recipe.training.method
    with distributed.main_first():
        loaded = load_data(data, recipe.training.seed, recipe.model.task)
        system, base = data.system_prompt, resolve_model_path(recipe.model.name, log)
        if system is None:
            system = saved_system_prompt(base)
            if system:
                log(f"system prompt: the base checkpoint's ({system!r}), as generation renders it")
        train_rows = preference_examples(loaded.train, data, system, method, "data.train", data.train)
        validation_rows = preference_examples(loaded.validation, data, system, method, "data.validation",
                                              data.validation or data.train)
        log(f"data: {len(train_rows)} training and {len(validation_rows)} validation "
            f"{'pairs' if method == 'dpo' else 'rated answers'}")
        tokenizer, model = load_pretrained(recipe, log)
        if recipe.training.lora.enabled:
            model = add_lora(model, recipe)
            trainable, total = model.get_nb_trainable_parameters()
            log(f"LoRA: training {trainable / 1e6:.2f}M of {total / 1e6:.1f}M parameters; the reference is the "
                "same model with the adapter off")
    check_prompt_lengths(train_rows, tokenizer, recipe.preprocess.block_size, log)
    if resume and not force:
        check_resume_matches(out, to_dict(recipe), loaded.content_hash)
    if distributed.is_main():
        if overwrite and out.exists() and any(out.iterdir()):
            clear_run(out, log)
        claim_output_dir(out, to_dict(recipe), loaded.content_hash)
        check_disk_space(out, model)
    distributed.wait_for_everyone()

    from hftoolkit.train.stopping import SafeCheckpoints  # heavy: transformers' Trainer, once the data is checked

    safe = SafeCheckpoints(final_save=recipe.output.keep_training_state)
    trainer, precision = build_preference_trainer(recipe, model, tokenizer, train_rows, validation_rows, out, safe,
                                                  log)
    with safe:
        result = trainer.train(resume_from_checkpoint=last_trainer_checkpoint(out) if resume else None)
    if safe.stop_signal is not None:
        raise TrainingStopped(f"stopped at step {trainer.state.global_step}; the checkpoint "
                              f"{last_trainer_checkpoint(out)} is saved: run the same command with --resume to "
                              "continue", safe.stop_signal)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    final = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "tb_writer") and hasattr(callback, "close"):
            callback.close()
    metrics = summarize_preference(method, trainer.state.log_history, result.metrics, final, precision,
                                   len(train_rows), time.time() - started)
    if distributed.is_main():
        save_checkpoint(out, trainer.model, tokenizer, to_dict(recipe), metrics, trainer.state.log_history,
                        inherited_index_record(str(base), log))
        if not recipe.output.keep_training_state:
            SafeCheckpoints.remove_all(out / TRAINER_DIR)
        log(f"saved checkpoint to {out}: " + headline(metrics) + preference_line(metrics))
    distributed.wait_for_everyone()
    return metrics


def check_prompt_lengths(rows: list[dict], tokenizer, block_size: int, log) -> None:
    """TRL drops an example whose prompt alone fills `max_length` (nothing of its answer would be left): say how
    many, and refuse a run that would have none, before anything is written."""
    longest, dropped = 0, 0
    for row in rows:
        length = len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
        longest = max(longest, length)
        dropped += length >= block_size
    if rows and dropped == len(rows):
        raise UserError(f"preprocess.block_size: {block_size} tokens hold no training prompt with room for its "
                        f"answer (the longest prompt is {longest} tokens); raise preprocess.block_size")
    if dropped:
        log(f"warning: {dropped} of {len(rows)} training prompts fill preprocess.block_size ({block_size} tokens) and "
            "are left out; raise it to keep them")


def build_preference_trainer(recipe: Recipe, model, tokenizer, train_rows: list[dict], validation_rows: list[dict],
                             out, safe_checkpoints, log=lambda message: None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    training, knobs = recipe.training, recipe.training.preference
    precision, why = resolve_precision(training.precision)
    log(f"precision: {precision} ({why})")
    log(f"memory allocator: {describe()}")
    common = {"beta": knobs.beta, "max_length": recipe.preprocess.block_size,
              "gradient_checkpointing": training.gradient_checkpointing, "disable_dropout": True}
    if training.method == "dpo":
        config_class, trainer_class = DPOConfig, DPOTrainer
        extra = {**common, "loss_type": [knobs.loss_type]}
    else:
        config_class, trainer_class = KTOConfig, KTOTrainer
        # KTO pairs each example with its neighbour's completion for its KL term, so TRL reads the rows in order:
        # they are shuffled once, by the recipe's seed, so good and bad answers mix in every batch
        extra = {**common, "desirable_weight": knobs.desirable_weight,
                 "undesirable_weight": knobs.undesirable_weight, "train_sampling_strategy": "sequential"}
    args = training_arguments(training, out, precision, config_class=config_class, **extra)
    callbacks = [tensorboard_callback(out / "logs")] if is_main() else []
    callbacks.append(safe_checkpoints)
    train_dataset = Dataset.from_list(train_rows)
    if training.method == "kto":
        train_dataset = train_dataset.shuffle(seed=training.seed)
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset,
                            eval_dataset=Dataset.from_list(validation_rows), processing_class=tokenizer,
                            callbacks=callbacks)
    return trainer, precision


def summarize_preference(method: str, history: list[dict], train_metrics: dict, final_eval: dict, precision: str,
                         examples: int, wall: float) -> dict:
    """metrics.json of a preference run: the trainer's own measures at the start (the reference itself) and
    at the end, on the validation rows."""
    evals = [h for h in history if "eval_loss" in h]
    start = evals[0] if evals and evals[0].get("step") == 0 else {}
    runtime = train_metrics.get("train_runtime", wall)
    summary = {"method": method, "train_loss": train_metrics.get("train_loss")}
    for name in REPORTED:
        key = f"eval_{name}"
        if key in final_eval:
            summary[f"{key}_start"] = start.get(key)
            summary[key] = final_eval[key]
    tokens = int(train_metrics.get("num_input_tokens_seen", 0) or
                 max((h.get("num_input_tokens_seen", 0) for h in history), default=0))
    summary.update({"train_steps": max((h.get("step", 0) for h in history), default=0),
                    "train_examples": examples, "tokens_seen": tokens,
                    "tokens_per_second": tokens / runtime if runtime else 0.0, "train_runtime_seconds": runtime,
                    "wall_time_seconds": wall, "precision": precision})
    return summary


def preference_line(metrics: dict) -> str:
    margins = metrics.get("eval_rewards/margins")
    if margins is None:
        return ""
    start = metrics.get("eval_rewards/margins_start")
    return f"; validation reward margin {start or 0.0:.3f} -> {margins:.3f}"
