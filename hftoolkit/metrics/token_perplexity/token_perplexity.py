"""Perplexity from summed token losses: exp(total loss / total tokens).

Each batch adds its summed cross-entropy and its number of predicted tokens, so
the result is token-weighted however the batches were sized.
"""

import math

import datasets
import evaluate


class TokenPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="exp of the token-weighted mean cross-entropy.", citation="",
            inputs_description="predictions: summed loss of a batch; references: its number of tokens",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        tokens = sum(references)
        loss = sum(predictions) / tokens if tokens else 0.0
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}
