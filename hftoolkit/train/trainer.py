"""The Trainer subclass hftoolkit uses: plain transformers Trainer plus eval perplexity and class weights."""

from transformers import Trainer

from hftoolkit.train.metrics import perplexity


class PerplexityTrainer(Trainer):
    """Logs eval perplexity (exp of the eval loss) beside the loss, in logs and TensorBoard.

    With `class_weights`, the single-label classification training loss weights
    each class, so rare classes are not drowned out by common ones.
    """

    def __init__(self, *args, class_weights=None, log_perplexity=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights, self.log_perplexity = class_weights, log_perplexity

    def log(self, logs: dict, *args, **kwargs):
        if "eval_loss" in logs and self.log_perplexity:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None or not model.training:  # eval loss stays the plain, comparable one
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.tensor(self.class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weight.float())
        return (loss, outputs) if return_outputs else loss
