"""The Trainer subclass hftoolkit uses: plain transformers Trainer plus what the heads need.

- eval perplexity (exp of the eval loss) logged beside the loss; for causal LMs the eval loss is the mean
  over labelled tokens (the Trainer's own is a mean of per-batch means);
- class weights for single-label classification, and gradient accumulation that scales mean losses right;
- packed text blocks: run without the 2D mask, so per-document position ids keep documents apart;
- causal LMs: the loss computed only at labelled positions (`train.loss`), after a
  one-time check that it equals the model's own loss;
- optional answer accuracy (`train.answer_eval`) added to every evaluation, so it
  is logged and can drive early stopping and best-checkpoint selection.
"""

from transformers import Trainer
from transformers.utils import logging

from hftoolkit.data.pack import packed_inputs
from hftoolkit.data.stream_blocks import StreamedBlocks
from hftoolkit.train.distributed import all_reduce_sum
from hftoolkit.train.loss import labelled_positions_loss, matches_model_loss
from hftoolkit.train.metrics import perplexity
from hftoolkit.train.packed import documents_kept_apart

logger = logging.get_logger("hftoolkit")


class PerplexityTrainer(Trainer):
    def __init__(self, *args, class_weights=None, log_perplexity=True, labelled_positions_loss=False,
                 token_mean_eval=False, answer_accuracy=None, loss_is_batch_mean=False, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_is_batch_mean:
            # Encoder heads (and the class-weighted loss below) return a per-batch mean and ignore
            # num_items_in_batch; their forward takes **kwargs, so the Trainer would otherwise assume the loss
            # is already normalised across accumulation steps and leave gradients N times too large.
            self.loss_is_scaled_for_ga = False
        self.class_weights, self.log_perplexity = class_weights, log_perplexity
        self.answer_accuracy = answer_accuracy
        self.labelled_positions = labelled_positions_loss  # None after the check below fails
        self._labelled_positions_checked = False
        self.token_mean_eval = token_mean_eval  # causal LMs: eval loss as a mean over labelled tokens
        self._eval_nll = None
        self._documents_apart = None  # checked on the first packed batch

    def get_train_dataloader(self):
        """A streamed corpus is read in this process, one batch at a time, with no read-ahead: the stream's
        state between two steps is then exactly what training consumed (see `train.stream_state`). Each rank
        streams its own share, so accelerate neither shards nor dispatches it."""
        if not isinstance(self.train_dataset, StreamedBlocks):
            return super().get_train_dataloader()
        import torch
        from torch.utils.data import DataLoader

        # its own generator: a DataLoader draws a seed when an iterator starts, and drawn from the global one it
        # would shift the dropout masks of a resumed run against the uninterrupted one
        return DataLoader(self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                          num_workers=0, generator=torch.Generator().manual_seed(self.args.seed))

    def _packed(self, model, inputs):
        if "position_ids" not in inputs:
            return inputs
        if self._documents_apart is None:
            was_training = model.training
            model.eval()
            self._documents_apart = documents_kept_apart(model, inputs)
            model.train(was_training)
            if not self._documents_apart:
                logger.warning("this model does not separate packed documents by position ids: training with "
                               "the plain mask (documents see earlier ones in their block)")
        if self._documents_apart:
            return packed_inputs(inputs)
        return {k: v for k, v in inputs.items() if k != "position_ids"}

    def log(self, logs: dict, *args, **kwargs):
        if "eval_loss" in logs and self.log_perplexity:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        self._eval_nll = [0.0, 0]  # summed NLL and labelled tokens, from the labelled-positions loss
        try:
            output = super().evaluation_loop(*args, **kwargs)
        finally:
            total, tokens = self._eval_nll
            self._eval_nll = None

        total, tokens = all_reduce_sum([total, tokens])  # each rank saw its share of the eval set
        prefix = kwargs.get("metric_key_prefix", "eval")
        if tokens and f"{prefix}_loss" in output.metrics:
            # the Trainer averages per-batch means; answers of different lengths need the per-token mean,
            # or exp(loss) is not a token perplexity
            output.metrics[f"{prefix}_loss"] = total / tokens
        if self.answer_accuracy is not None and prefix == "eval":
            output.metrics[f"{prefix}_answer_accuracy"] = self.answer_accuracy(self.model)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self._packed(model, inputs)  # packed text: documents attend only to themselves
        if self.token_mean_eval and not model.training:
            # a per-batch mean, weighted by its tokens below: given a token count, the Trainer scales the loss
            # by the number of processes, which the sum over ranks must not see
            num_items_in_batch = None
        result = self._loss(model, inputs, return_outputs, num_items_in_batch)
        if self.token_mean_eval and not model.training and self._eval_nll is not None and "labels" in inputs:
            loss = result[0] if return_outputs else result
            tokens = int((inputs["labels"][:, 1:] != -100).sum())  # this rank's labelled tokens
            self._eval_nll[0] += float(loss) * tokens  # loss = this batch's mean over them
            self._eval_nll[1] += tokens
        return result

    def _loss(self, model, inputs, return_outputs, num_items_in_batch):
        # a DDP/FSDP wrapper must run its own forward (gradient sync), so the shortcut is for plain models
        if self.labelled_positions and "labels" in inputs and not hasattr(model, "module"):
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
        if not self._labelled_positions_checked:
            self._labelled_positions_checked = True
            was_training = model.training
            model.eval()  # dropout off, so both losses see the same network
            same = matches_model_loss(model, inputs)
            model.train(was_training)
            if not same:
                self.labelled_positions = None
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.accelerator.autocast():  # bf16 where the run trains in bf16, as the model's own forward
            loss = labelled_positions_loss(model, inputs, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss
