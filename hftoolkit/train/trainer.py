"""The Trainer subclass hftoolkit uses: plain transformers Trainer plus what the heads need.

- eval perplexity (exp of the eval loss) logged beside the loss;
- class weights for single-label classification;
- causal LMs: the loss computed only at labelled positions (`train.loss`), after a
  one-time check that it equals the model's own loss;
- optional answer accuracy (`train.answer_eval`) added to every evaluation, so it
  is logged and can drive early stopping and best-checkpoint selection.
"""

from transformers import Trainer

from hftoolkit.train.metrics import perplexity


class PerplexityTrainer(Trainer):
    def __init__(self, *args, class_weights=None, log_perplexity=True, labelled_positions_loss=False,
                 answer_accuracy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights, self.log_perplexity = class_weights, log_perplexity
        self.answer_accuracy = answer_accuracy
        self.labelled_positions = labelled_positions_loss  # None after the check below fails
        self._labelled_positions_checked = False

    def log(self, logs: dict, *args, **kwargs):
        if "eval_loss" in logs and self.log_perplexity:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        if self.answer_accuracy is not None and prefix == "eval":
            output.metrics[f"{prefix}_answer_accuracy"] = self.answer_accuracy(self.model)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.labelled_positions and "labels" in inputs:
            return self._labelled_positions_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.class_weights is None or not model.training:  # eval loss stays the plain, comparable one
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.tensor(self.class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weight.float())
        return (loss, outputs) if return_outputs else loss

    def _labelled_positions_loss(self, model, inputs, return_outputs, num_items_in_batch):
        from hftoolkit.train.loss import labelled_positions_loss, matches_model_loss

        if not self._labelled_positions_checked:
            self._labelled_positions_checked = True
            was_training = model.training
            model.eval()  # dropout off, so both losses see the same network
            same = matches_model_loss(model, inputs)
            model.train(was_training)
            if not same:
                self.labelled_positions = None
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = labelled_positions_loss(model, inputs, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss
