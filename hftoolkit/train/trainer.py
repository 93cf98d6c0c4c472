"""The Trainer subclass hftoolkit uses: plain transformers Trainer plus eval perplexity."""

from transformers import Trainer

from hftoolkit.train.metrics import perplexity


class PerplexityTrainer(Trainer):
    """Logs eval perplexity (exp of the eval loss) beside the loss, in logs and TensorBoard."""

    def log(self, logs: dict, *args, **kwargs):
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)
