"""Sentence embeddings from any sentence-transformers-style checkpoint, with transformers alone.

The pooling (mean or CLS) and the maximum length come from the checkpoint's own
`1_Pooling/config.json` and `sentence_bert_config.json`; vectors are
L2-normalised so the inner product is the cosine similarity.
"""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.checkpoint.open import check_safetensors
from hftoolkit.errors import UserError
from hftoolkit.models.load import resolve_model_path


class SentenceEmbedder:
    def __init__(self, name: str, log=print):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.path = resolve_model_path(name, log, field="embedder")
        check_safetensors(self.path, f"embedder '{name}'")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32, use_safetensors=True).eval()
        except Exception as exc:  # a bad folder fails in tokenizer, config or weights, each its own way
            raise UserError(f"embedder '{name}' could not be loaded ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:140] if str(exc) else ''}); give minilm-l6 or a "
                            "sentence-embedding checkpoint folder") from None
        self.pooling = _pooling_mode(Path(self.path))
        self.max_length = _max_length(Path(self.path), self.tokenizer)

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, texts: list[str], batch_size: int = 32, progress=None):
        """float32 array (len(texts), dimensions), unit length per row. Texts are batched longest first, so
        each batch pads to lengths close to its own (sentences of a corpus vary several-fold in length)."""
        import numpy as np
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        texts = [texts[i] for i in order]
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state  # (batch, tokens, dimensions)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
                if progress:
                    progress(min(start + batch_size, len(texts)))
        if not vectors:
            return np.zeros((0, self.dimensions), "float32")
        ordered = np.concatenate(vectors).astype("float32")
        result = np.empty_like(ordered)
        result[order] = ordered  # back in the caller's order
        return result


def _pooling_mode(folder: Path) -> str:
    config = folder / "1_Pooling" / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        if settings.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def _max_length(folder: Path, tokenizer) -> int:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        length = json.loads(config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    return min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
