"""Packed training blocks made on the fly from streamed documents (or qa/chat examples from streamed rows), with
a state to resume from.

Documents are tokenized a few at a time and packed continuously: a block is cut as soon as block_size tokens
wait, with per-document positions exactly as `data.pack` gives them; only the end of the corpus leaves a
padded block. A shuffle buffer of `shuffle_buffer` blocks draws them in random order (0: corpus order).

`state_dict()` is everything needed to go on as if never stopped: the read position, the tokens waiting for
the next block, the blocks made but not yet drawn, the shuffle buffer and its random generator. Taken
between two batches it describes exactly what was consumed, so a resumed run sees the same batches as the
uninterrupted one, without reading anything that came before. After the last document the next epoch
starts from the first; the stream ends after `limit` blocks (training.max_steps' worth).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable

import torch

from hftoolkit.data.pack import IGNORE_INDEX, packed_block
from hftoolkit.data.stream_documents import START, DocumentSource, read_documents
from hftoolkit.errors import UserError

DOCUMENTS_PER_BATCH = 64  # tokenized together: the fast tokenizer's batch call, a few hundred KB of text


class StreamedBlocks(torch.utils.data.IterableDataset):
    def __init__(self, source: DocumentSource, tokenizer, block_size: int, add_eos: bool, shuffle_buffer: int,
                 seed: int, rank: int = 0, world: int = 1, encode_row: Callable[[dict], dict] | None = None):
        self.source, self.tokenizer, self.block_size = source, tokenizer, block_size
        self.encode_row = encode_row  # qa/chat: one example per row, not packed
        self.eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.buffer_size, self.rank, self.world = shuffle_buffer, rank, world
        self.rng = random.Random(seed)
        self.epoch, self.position = 0, dict(START)
        self.waiting = {"ids": [], "positions": []}  # tokens of the next block, positions within documents
        self.ready: deque = deque()  # blocks cut, not yet in the shuffle buffer
        self.buffer: list = []
        self.epoch_done = False
        self.documents = self.blocks = 0  # consumed since the first step, over all runs
        self.documents_read = 0  # parsed by this process: a resumed run reads only what it trains on
        self.without_answer = 0  # qa/chat rows whose answer was cut off entirely by block_size: not trained on
        self._reader = None
        self.limit: int | None = None  # blocks this process trains on in the whole run: a run resumed from its
        # last checkpoint then gets an empty stream and ends, instead of the Trainer starting another step

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": dict(self.position), "waiting": _copy_block(self.waiting),
                "ready": list(self.ready), "buffer": list(self.buffer), "epoch_done": self.epoch_done,
                "rng": _json_rng(self.rng.getstate()), "documents": self.documents, "blocks": self.blocks,
                "rank": self.rank, "world": self.world, "without_answer": self.without_answer}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.waiting = state["epoch"], dict(state["position"]), _copy_block(state["waiting"])
        self.ready, self.buffer, self.epoch_done = deque(state["ready"]), list(state["buffer"]), state["epoch_done"]
        self.rng.setstate(_python_rng(state["rng"]))
        self.documents, self.blocks = state["documents"], state["blocks"]
        self.without_answer = state.get("without_answer", 0)
        self._reader = None  # reopened at the saved position

    # -- iteration --------------------------------------------------------------------------------
    def __iter__(self):
        while self.limit is None or self.blocks < self.limit:
            block = self._next_block()
            self.blocks += 1
            yield block if self.encode_row else packed_block(block["ids"], block["positions"], self.block_size,
                                                             self.pad_id)

    def _next_block(self) -> dict:
        for _ in range(2):  # a second empty epoch: this process's share holds no documents at all
            while len(self.buffer) < max(1, self.buffer_size) and self._have_ready():
                self.buffer.append(self.ready.popleft())
            if self.buffer:
                pick = self.rng.randrange(len(self.buffer)) if self.buffer_size else 0
                self.buffer[pick], self.buffer[-1] = self.buffer[-1], self.buffer[pick]
                return self.buffer.pop()
            self._next_epoch()
        raise UserError(f"{self.source.field_name}: process {self.rank} of {self.world} got no documents to train "
                        "on; give more documents (or files) than processes")

    def _have_ready(self) -> bool:
        """Cut blocks until one is ready; False once this epoch's documents are all drawn."""
        while not self.ready and not self.epoch_done:
            texts = self._read(DOCUMENTS_PER_BATCH)
            if texts and self.encode_row:
                self._encode(texts)
            elif texts:
                self._pack(self.tokenizer(texts, add_special_tokens=False)["input_ids"])
            else:
                self._flush()
        return bool(self.ready)

    def _read(self, count: int) -> list[str]:
        if self._reader is None:
            self._reader = read_documents(self.source, self.position, self.rank, self.world)
        texts = []
        for text, position in self._reader:
            texts.append(text)
            self.position = position
            if len(texts) == count:
                break
        self.documents += len(texts)
        self.documents_read += len(texts)
        return texts

    def _encode(self, rows: list[dict]) -> None:
        for row in rows:
            example = self.encode_row(row)
            if all(label == IGNORE_INDEX for label in example["labels"]):
                self.without_answer += 1  # the map-style path refuses such data up front; a stream cannot
                continue
            self.ready.append({k: example[k] for k in ("input_ids", "attention_mask", "labels")})

    def _pack(self, encoded: list[list[int]]) -> None:
        ids, positions = self.waiting["ids"], self.waiting["positions"]
        for document in encoded:
            document = document + self.eos
            ids.extend(document)
            positions.extend(range(len(document)))
        start = 0
        while len(ids) - start >= self.block_size:
            end = start + self.block_size
            self.ready.append({"ids": ids[start:end], "positions": positions[start:end]})
            start = end
        self.waiting = {"ids": ids[start:], "positions": positions[start:]}

    def _flush(self) -> None:
        """End of the epoch's documents: what waits becomes the one padded block."""
        if self.waiting["ids"]:
            self.ready.append(self.waiting)
        self.waiting = {"ids": [], "positions": []}
        self.epoch_done = True

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.position, self.epoch_done, self._reader = dict(START), False, None


def _copy_block(block: dict) -> dict:
    """The waiting tokens grow in place; a state must not share their lists (cut blocks are never changed)."""
    return {"ids": list(block["ids"]), "positions": list(block["positions"])}


def _json_rng(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss
