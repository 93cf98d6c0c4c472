"""What differs per head (causal LM, masked LM, classifier): batching, metrics, loss weights."""

from __future__ import annotations

from hftoolkit.metrics import load_metric
from hftoolkit.recipe.schema import Recipe


def collator_for(recipe: Recipe, tokenizer):
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        default_data_collator,
    )

    task = recipe.model.task
    if task == "classification":
        return DataCollatorWithPadding(tokenizer)
    if task == "masked_lm":
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=recipe.preprocess.mlm_probability,
                                               whole_word_mask=recipe.preprocess.whole_word_mask,
                                               seed=recipe.training.seed)
    if recipe.data.format == "text":
        return default_data_collator  # text blocks are already fixed-length
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)  # variable-length chat


class ClassificationMetrics:
    """compute_metrics for Trainer(batch_eval_metrics=True): adds each batch, computes at the end.

    Only predicted ids (or values) are kept per batch, never the eval set's logits.
    """

    def __init__(self, problem_type: str, label_names: list[str]):
        self.problem_type, self.label_names = problem_type, label_names
        self._reset()

    def _reset(self):
        if self.problem_type == "regression":
            self.metrics = [load_metric("regression_errors")]
        elif self.problem_type == "multi_label_classification":
            self.metrics = [load_metric("classification_f1", config_name="multilabel")]
        else:
            self.metrics = [load_metric("accuracy"), load_metric("classification_f1")]

    def predictions(self, logits):
        import torch

        logits = torch.as_tensor(logits).float()
        if self.problem_type == "regression":
            return logits.reshape(-1).tolist()
        if self.problem_type == "multi_label_classification":
            return (torch.sigmoid(logits) > 0.5).long().tolist()
        return logits.argmax(-1).tolist()

    def references(self, labels):
        import torch

        labels = torch.as_tensor(labels)
        if self.problem_type == "regression":
            return labels.float().reshape(-1).tolist()
        return labels.long().tolist()

    def __call__(self, eval_pred, compute_result: bool = True) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predictions, references = self.predictions(logits), self.references(eval_pred.label_ids)
        for metric in self.metrics:
            metric.add_batch(predictions=predictions, references=references)
        if not compute_result:
            return {}
        result = {}
        for metric in self.metrics:
            extra = {"label_names": self.label_names} if metric.name == "classification_f1" else {}
            result.update(metric.compute(**extra))
        self._reset()
        return result


def compute_metrics_for(recipe: Recipe, label_names: list[str] | None):
    if recipe.model.task != "classification":
        return None  # LMs report eval loss and perplexity
    return ClassificationMetrics(recipe.model.problem_type, label_names or [])
