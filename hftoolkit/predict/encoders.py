"""Predict pipelines for encoder checkpoints: text classification and mask filling, batched."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.checkpoint.open import check_checkpoint, open_config, open_model, open_tokenizer
from hftoolkit.errors import UserError

HEADS = {"AutoModelForSequenceClassification": ("ForSequenceClassification", "classifier"),
         "AutoModelForMaskedLM": ("ForMaskedLM", "masked-LM")}


def _load(path: str, auto_class: str):
    check_checkpoint(path)
    suffix, what = HEADS[auto_class]
    config = open_config(path)
    if not any(a.endswith(suffix) for a in config.architectures or []):
        # loading would attach a randomly initialised head and predict nonsense with a straight face
        raise UserError(f"checkpoint '{path}' is not a {what} ({', '.join(config.architectures or ['no head'])}); "
                        f"use a checkpoint trained with that head")
    return open_tokenizer(path), open_model(path, auto_class).eval()


class Classifier:
    """Labels with scores for texts: softmax (single-label), sigmoid (multi-label) or the value (regression)."""

    def __init__(self, path: str):
        self.tokenizer, self.model = _load(path, "AutoModelForSequenceClassification")
        self.problem_type = self.model.config.problem_type or (
            "regression" if self.model.config.num_labels == 1 else "single_label_classification")

    def predict(self, texts: list[str], top_k: int = defaults.CLASSIFY_TOP_K, batch_size: int = defaults.CLASSIFY_BATCH) -> list[list[dict]]:
        import torch

        if not texts or any(not t.strip() for t in texts):
            raise UserError("empty text: give one or more non-empty texts to classify")
        results = []
        id2label = self.model.config.id2label
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            if self.problem_type == "regression":
                results += [[{"label": "value", "score": float(v)}] for v in logits[:, 0]]
                continue
            scores = torch.sigmoid(logits) if self.problem_type == "multi_label_classification" \
                else logits.softmax(-1)
            for row in scores:
                top = row.topk(min(top_k, row.numel()))
                results.append([{"label": id2label[int(i)], "score": float(s)}
                                for s, i in zip(top.values, top.indices)])
        return results


class MaskFiller:
    """Most likely tokens for the mask token in each text."""

    def __init__(self, path: str):
        self.tokenizer, self.model = _load(path, "AutoModelForMaskedLM")

    def fill(self, texts: list[str], top_k: int = defaults.FILL_MASK_TOP_K, batch_size: int = defaults.CLASSIFY_BATCH) -> list[list[dict]]:
        import torch

        mask = self.tokenizer.mask_token
        for text in texts:
            if mask not in text:
                raise UserError(f"'{text}' has no mask token; write {mask} where a word is missing")
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            for row, text in enumerate(chunk):
                found = (batch["input_ids"][row] == self.tokenizer.mask_token_id).nonzero()
                if not len(found):
                    raise UserError(f"the mask token in '{text[:60]}...' lies beyond the model's "
                                    f"{self.tokenizer.model_max_length}-token limit; shorten the text before it")
                position = found[0, 0]
                top = logits[row, position].softmax(-1).topk(top_k)
                results.append([{"token": self.tokenizer.decode([int(i)]).strip(), "score": float(s),
                                 "sequence": text.replace(mask, self.tokenizer.decode([int(i)]).strip(), 1)}
                                for s, i in zip(top.values, top.indices)])
        return results
