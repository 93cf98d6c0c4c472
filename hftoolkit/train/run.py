"""`hftoolkit train`: recipe → data → tokenize/pack → model → Trainer → checkpoint, read top to bottom."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from hftoolkit.checkpoint.output_dir import check_output_dir, last_trainer_checkpoint
from hftoolkit.checkpoint.save import save_checkpoint
from hftoolkit.data.chat_format import show_loss_mask
from hftoolkit.data.preprocess import preprocess
from hftoolkit.data.splits import load_data
from hftoolkit.recipe.load import to_dict
from hftoolkit.recipe.schema import Recipe
from hftoolkit.recipe.validate import validate
from hftoolkit.train.metrics import perplexity as _perplexity


def train(recipe: Recipe, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Run a validated recipe end to end; returns the metrics written to metrics.json."""
    validate(recipe)
    out = check_output_dir(recipe.output.dir, resume, overwrite)
    started = time.time()

    loaded = load_data(recipe.data, recipe.training.seed)
    log(f"data: {len(loaded.train)} training and {len(loaded.validation)} validation documents")
    tokenizer, model = setup_model(recipe, loaded, log)

    blocks, stats, hit = preprocess(recipe, loaded, tokenizer)
    log(f"preprocessing: cache {'hit, reusing' if hit else 'miss, tokenized'} ({'same' if hit else 'new'} "
        "data, tokenizer and preprocess settings)")
    for split, numbers in stats.items():
        log(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
    if recipe.data.format != "text":
        log("one training example (learned tokens in [[ ]]):\n" + show_loss_mask(blocks["train"][0], tokenizer))

    if overwrite and out.exists():
        shutil.rmtree(out)  # only now: bad input above must never cost the user an old run
    trainer, precision = build_trainer(recipe, model, tokenizer, blocks, out)
    result = trainer.train(resume_from_checkpoint=last_trainer_checkpoint(out) if resume else None)
    final_eval = trainer.evaluate()
    metrics = summarize(trainer.state.log_history, result.metrics, final_eval, stats, precision,
                        time.time() - started)
    save_checkpoint(out, trainer.model, tokenizer, to_dict(recipe), metrics, trainer.state.log_history)
    log(f"saved checkpoint to {out}: eval perplexity {metrics['eval_perplexity_start']:.2f} -> "
        f"{metrics['eval_perplexity']:.2f}, {metrics['tokens_per_second']:.0f} tokens/s, "
        f"{metrics['wall_time_seconds']:.1f}s")
    return metrics


def setup_model(recipe: Recipe, loaded, log):
    """(tokenizer, model), pretrained or from scratch, with LoRA adapters when asked."""
    from hftoolkit.models.load import add_lora, build_from_scratch, load_pretrained

    if recipe.model.from_scratch:
        column = recipe.data.text_column

        def texts():
            return (row[column] for row in loaded.train if isinstance(row[column], str))

        tokenizer, model = build_from_scratch(recipe, texts, loaded.content_hash, log)
    else:
        tokenizer, model = load_pretrained(recipe, log)
    if recipe.training.lora.enabled:
        model = add_lora(model, recipe)
        trainable, total = model.get_nb_trainable_parameters()
        log(f"LoRA: training {trainable / 1e6:.2f}M of {total / 1e6:.1f}M parameters")
    return tokenizer, model


def build_trainer(recipe: Recipe, model, tokenizer, blocks, out: Path):
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, default_data_collator

    from hftoolkit.train.arguments import resolve_precision, training_arguments
    from hftoolkit.train.trainer import PerplexityTrainer

    precision = resolve_precision(recipe.training.precision)
    args = training_arguments(recipe.training, out, precision)
    # text blocks are already fixed-length; qa/chat examples vary and are padded per batch
    collator = default_data_collator if recipe.data.format == "text" else DataCollatorForSeq2Seq(
        tokenizer, padding=True, label_pad_token_id=-100)
    callbacks = [tensorboard_callback(out / "logs")]
    if recipe.training.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.training.early_stopping_patience))
    trainer = PerplexityTrainer(model=model, args=args, train_dataset=blocks["train"],
                                eval_dataset=blocks["validation"], data_collator=collator,
                                processing_class=tokenizer, callbacks=callbacks)
    return trainer, precision


def tensorboard_callback(log_dir: Path):
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def summarize(history: list[dict], train_metrics: dict, final_eval: dict, stats: dict, precision: str,
              wall: float) -> dict:
    evals = [h for h in history if "eval_loss" in h]
    tokens = int(train_metrics.get("num_input_tokens_seen", 0) or
                 max((h.get("num_input_tokens_seen", 0) for h in history), default=0))
    runtime = train_metrics.get("train_runtime", wall)
    return {
        "train_loss": train_metrics.get("train_loss"),
        "eval_loss_start": evals[0]["eval_loss"],
        "eval_perplexity_start": _perplexity(evals[0]["eval_loss"]),
        "eval_loss": final_eval["eval_loss"],
        "eval_perplexity": _perplexity(final_eval["eval_loss"]),
        "train_steps": max((h.get("step", 0) for h in history), default=0),
        "tokens_seen": tokens,
        "tokens_per_second": tokens / runtime if runtime else 0.0,
        "train_runtime_seconds": runtime,
        "wall_time_seconds": round(wall, 2),
        "precision": precision,
        "preprocessing": stats,
    }


