"""Evaluate a classifier or masked-LM checkpoint exactly as its training run evaluated it.

The checkpoint's recipe.yaml (when present) supplies the columns, block size,
eval batch size and precision, and the same preprocessing, collator and metric
modules are used, so the numbers match the end-of-training evaluation.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from hftoolkit.checkpoint.open import open_config, open_model, open_tokenizer
from hftoolkit.checkpoint.saved import saved_recipe_dict
from hftoolkit.data.encoder_format import encode_classification, encode_masked_lm
from hftoolkit.data.sources import load_split, require_columns
from hftoolkit.data.splits import required_columns
from hftoolkit.errors import UserError
from hftoolkit.models.load import AUTO_CLASSES
from hftoolkit.recipe.load import build
from hftoolkit.recipe.schema import Recipe
from hftoolkit.train.heads import collator_for, compute_metrics_for
from hftoolkit.train.metrics import perplexity


def saved_recipe(checkpoint: str, task: str, problem_type: str | None) -> Recipe:
    recipe = build(Recipe, saved_recipe_dict(checkpoint), prefix="")
    model = replace(recipe.model, task=task, problem_type=problem_type or recipe.model.problem_type)
    return replace(recipe, model=model)


def saved_precision(checkpoint: str) -> str:
    metrics_file = Path(checkpoint) / "metrics.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text()).get("precision", "fp32")
    return "fp32"


def evaluate_encoder(checkpoint: str, data: str, task: str, batch_size: int | None = None) -> dict:
    import torch
    from transformers import TrainingArguments

    from hftoolkit.train.trainer import PerplexityTrainer  # heavy: transformers' Trainer, imported when work starts

    config = open_config(checkpoint)
    recipe = saved_recipe(checkpoint, task, getattr(config, "problem_type", None))
    rows = load_split(data, "--data")
    require_columns(rows.column_names, required_columns(recipe.data, task), data)
    tokenizer = open_tokenizer(checkpoint)
    model = open_model(checkpoint, AUTO_CLASSES[task])
    labels = None
    if task == "classification":
        labels = [config.id2label[i] for i in range(config.num_labels)] if recipe.model.problem_type != "regression" \
            else []
        encoded = encode_classification(rows, tokenizer, recipe, labels).remove_columns("truncated")
    else:
        encoded = encode_masked_lm(rows, tokenizer, recipe)
    precision = saved_precision(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size or recipe.training.eval_batch_size,
                                 bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), report_to="none",
                                 remove_unused_columns=False, batch_eval_metrics=task == "classification",
                                 seed=recipe.training.seed, data_seed=recipe.training.seed)
        trainer = PerplexityTrainer(model=model, args=args, eval_dataset=encoded, processing_class=tokenizer,
                                    data_collator=collator_for(recipe, tokenizer),
                                    compute_metrics=compute_metrics_for(recipe, labels),
                                    log_perplexity=task != "classification")
        result = trainer.evaluate()
    if task == "masked_lm":
        result["eval_perplexity"] = perplexity(result["eval_loss"])
    return {k: v for k, v in result.items() if "runtime" not in k and "per_second" not in k}


def head_of(checkpoint: str) -> str:
    """causal_lm, masked_lm or classification, from config.json's architectures."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        raise UserError(f"checkpoint '{checkpoint}' has no config.json; is it a checkpoint folder?")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    for arch in architectures:
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal_lm"
        if arch.endswith("ForMaskedLM"):
            return "masked_lm"
        if arch.endswith("ForSequenceClassification"):
            return "classification"
    raise UserError(f"checkpoint '{checkpoint}' has no head hftoolkit evaluates ({architectures or 'none'}); "
                    "supported: causal LM, masked LM, sequence classification")
