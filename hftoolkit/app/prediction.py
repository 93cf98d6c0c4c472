"""The `classify` and `fill-mask` verbs over encoder checkpoints."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.app.generation import read_prompts
from hftoolkit.predict.encoders import Classifier, MaskFiller


def classify(checkpoint: str, texts: list | tuple = (), file: str | None = None, top_k: int = defaults.CLASSIFY_TOP_K,
             batch_size: int = defaults.CLASSIFY_BATCH) -> list[dict]:
    """[{"text", "labels": [{"label", "score"}, ...]}] per text (given and/or read from `file`)."""
    items = read_prompts(texts, file)
    predicted = Classifier(checkpoint).predict(items, top_k, batch_size)
    return [{"text": text, "labels": labels} for text, labels in zip(items, predicted)]


def fill_mask(checkpoint: str, texts: list | tuple, top_k: int = defaults.FILL_MASK_TOP_K) -> list[dict]:
    """[{"text", "predictions": [{"token", "score", ...}, ...]}] per text holding the mask token."""
    return [{"text": text, "predictions": options}
            for text, options in zip(texts, MaskFiller(checkpoint).fill(list(texts), top_k))]
