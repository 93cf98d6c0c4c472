"""Stream a batch: one `generate()` for several prompts, each row's text handed out as it grows.

transformers' text streamers take one sequence; a server that batches concurrent requests needs every row's
pieces separately, and needs to stop a row whose client went away (or that reached a stop string) without
stopping the others. `RowStreamer` decodes each row as its tokens arrive; `RowStopper` tells `generate()`
which rows are done.
"""

from __future__ import annotations

from typing import Callable

from hftoolkit.generate.engine import cut_at_stop


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop string: they wait for the next
    token, because text already sent cannot be taken back when the stop string completes."""
    longest = 0
    for stop in stops or ():
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class RowStreamer:
    """A `generate(streamer=...)` sink that calls `on_piece(row, text)` with each row's new text."""

    def __init__(self, tokenizer, rows: int, stops: list[str], stop_ids: set[int],
                 on_piece: Callable[[int, str], None]):
        self.tokenizer, self.stops, self.stop_ids, self.on_piece = tokenizer, stops, stop_ids, on_piece
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.finished = [False] * rows  # EOS seen, or a stop string reached
        self.ended_on_eos = [False] * rows
        self.prompt_seen = False
        self.ending = False  # generate() is done: flush whatever is left

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompts themselves
            self.prompt_seen = True
            return
        column = value.reshape(len(self.ids), -1)
        for row, tokens in enumerate(column.tolist()):
            if self.finished[row]:
                continue
            for token in tokens:
                if token in self.stop_ids:
                    self.finished[row] = self.ended_on_eos[row] = True
                    break
                self.ids[row].append(token)
            self._flush(row)

    def _flush(self, row: int) -> None:
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        if self.stops:
            cut = cut_at_stop(text, self.stops)
            if len(cut) < len(text):
                text, self.finished[row] = cut, True
        if not (self.finished[row] or self.ending):
            if text.endswith("\ufffd"):
                return  # half of a multi-byte character: wait for the rest
            text = text[:len(text) - held_back(text, self.stops)]
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            self.on_piece(row, text[len(self.sent[row]):])
            self.sent[row] = text

    def end(self) -> None:
        self.ending = True
        for row in range(len(self.ids)):
            self._flush(row)

    def text(self, row: int) -> str:
        return self.sent[row]

    def tokens(self, row: int) -> int:
        """New tokens of a row, its EOS included when it ended on one (as `Generator` counts them)."""
        return len(self.ids[row]) + int(self.ended_on_eos[row])


class RowStopper:
    """Stopping criteria: a row is done once its streamer finished it or `cancelled(row)` says so. generate()
    calls it once per token, so it also runs `between_steps()` there (the server answers cache hits then)."""

    def __init__(self, streamer: RowStreamer, cancelled: Callable[[int], bool],
                 between_steps: Callable[[], None] | None = None):
        self.streamer, self.cancelled, self.between_steps = streamer, cancelled, between_steps

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.between_steps is not None:
            self.between_steps()
        done = [self.streamer.finished[row] or self.cancelled(row) for row in range(input_ids.shape[0])]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
