"""Step 6: generate from a saved causal-LM checkpoint (ours or any Hugging Face folder).

Load once, then generate for one prompt or a batch. Batches are padded on the
left so every prompt's last token sits at the same position: greedy output then
matches generating each prompt alone. Chat mode applies the checkpoint's saved
chat template, exactly as training rendered it.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

from hftoolkit import defaults
from hftoolkit.checkpoint.open import check_checkpoint, open_config, open_model, open_tokenizer
from hftoolkit.errors import UserError


@dataclass
class GenerationSettings:
    """Sampling knobs; None means "use the checkpoint's generation_config"."""

    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    temperature: float | None = None  # 0 or None with do_sample unset: greedy
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    greedy: bool = False  # no sampling even when the checkpoint's generation_config asks to sample (evaluation)
    num_beams: int | None = None  # None: the checkpoint's generation_config (output.num_beams; default 1)

    def __post_init__(self):
        """Out-of-range knobs are named here, before any weights load (transformers would fail later, mid-run)."""
        ranges = (("--max-new-tokens", self.max_new_tokens, self.max_new_tokens >= 1, "at least 1"),
                  ("--temperature", self.temperature, self.temperature is None or self.temperature >= 0,
                   "0 (no sampling) or more"),
                  ("--top-p", self.top_p, self.top_p is None or 0 < self.top_p <= 1, "above 0 and at most 1"),
                  ("--sample-top-k", self.top_k, self.top_k is None or self.top_k >= 1, "at least 1"),
                  ("--repetition-penalty", self.repetition_penalty,
                   self.repetition_penalty is None or self.repetition_penalty > 0, "above 0 (1 is none)"),
                  ("num_beams", self.num_beams, self.num_beams is None or self.num_beams >= 1, "at least 1"))
        for flag, value, fits, wanted in ranges:
            if not fits:
                raise UserError(f"{flag}: {value} must be {wanted}")

    @property
    def sampling(self) -> bool:
        """Any sampling knob samples: top_p/top_k alone use the checkpoint's temperature (default 1.0)."""
        return bool(self.temperature) or self.top_p is not None or self.top_k is not None

    def check_window(self, context_length: int) -> None:
        """New tokens must leave room for a prompt in the model's window (no silent one-token prompts)."""
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens: {self.max_new_tokens} must be at least 1")
        if self.max_new_tokens >= context_length:
            raise UserError(f"--max-new-tokens: {self.max_new_tokens} leaves no room for the prompt in this "
                            f"model's {context_length}-token window; use at most {max(1, context_length // 2)} "
                            "or so")

    def as_dict(self) -> dict:
        return asdict(self)

    def with_checkpoint_defaults(self, suggested: dict) -> "GenerationSettings":
        """The checkpoint's own sampling settings (its generation_config: do_sample with temperature/top_p/
        top_k) apply when the caller set no sampling knob and did not ask for greedy."""
        if self.greedy or self.sampling or not suggested:
            return self
        from dataclasses import replace

        return replace(self, **suggested)


@dataclass
class Completion:
    prompt: str
    completion: str
    tokens: int
    seconds: float
    cached: bool = False
    passages: list = field(default_factory=list)  # retrieval.store.Hit objects put into the prompt
    log_id: int | None = None  # its row in the generation log, when one is kept
    request: object = None  # the prompt as asked (text or chat messages), before any template
    chat: bool = False  # whether the chat template was applied (the completion is then an answer)

    @property
    def sources(self) -> list[dict]:
        """Where the passages came from: file, character offsets, chunk id and similarity score."""
        return [hit.source() for hit in self.passages]


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}


def past_the_cache(cached: int):
    """A forward pre-hook that drops the `cached` tokens a given cache already holds from a pass that starts over.

    transformers' prompt lookup (5.x, `_assisted_decoding`) builds its first pass from the whole input even when
    generate() is given a cache of the prompt, which appended the prompt to the cache a second time and changed
    the answer (tested). Passes that start past the cache, as plain decoding's do, are left alone."""

    def hook(module, args, kwargs):
        ids, cache = kwargs.get("input_ids"), kwargs.get("cache")
        if ids is None or cache is None or cache.get_seq_length() != cached or ids.shape[1] <= cached:
            return None
        kwargs = {**kwargs, "input_ids": ids[:, cached:]}
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"][..., cached:]
        return args, kwargs

    return hook


def without_prompt_lookup(kwargs: dict) -> dict:
    """generate() arguments for plain greedy decoding: the same ids, one pass per token."""
    return {k: v for k, v in kwargs.items() if k != "prompt_lookup_num_tokens"}


class Generator:
    """A loaded checkpoint ready to generate. Construct with `Generator.load(path)`."""

    prompt_lookup_tokens = defaults.PROMPT_LOOKUP_TOKENS  # 0: plain greedy decoding for one answer too
    rows_consistent = False  # set by speed_up() in bf16: a row is rounded alike in passes of one or several rows
    row_passes = False  # set by speed_up(): one greedy answer's prompt is computed alone, later passes by rows
    decode_pass = None  # set by speed_up() with row_passes on Llama models: the passes after the prompt

    def __init__(self, model, tokenizer, path: str):
        self.model, self.tokenizer, self.path = model, tokenizer, path
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def load(cls, path: str, precision: str = "fp32", speed_up: bool = True) -> "Generator":
        """`precision`: fp32, or bf16 (weights and activations; half the memory traffic per generated token).
        `speed_up=False` keeps transformers' own layers (benchmarks compare the two)."""
        import torch

        check_checkpoint(path)
        if precision not in PRECISIONS:
            raise UserError(f"--precision: '{precision}' must be one of {', '.join(PRECISIONS)} (or auto)")
        tokenizer = open_tokenizer(path)
        model = open_model(path, "AutoModelForCausalLM", dtype=getattr(torch, PRECISIONS[precision]))
        model.eval()
        engine = cls(model, tokenizer, str(path))
        if speed_up:
            engine.speed_up()
        return engine

    def speed_up(self) -> None:
        """On a CPU, models on sdpa attention: linear layers packed for oneDNN (`pack_linears`: bf16 where the CPU
        has bf16 instructions, fp32 where it has none) and, for one greedy answer, attention computed row by row
        after the prompt (`use_row_attention`); batches, beams, sampling and prompts keep sdpa, which is faster.
        On Llama models those passes also skip transformers' wrapping (`DecodePass`, the same logits).

        bf16: the packed linears and the row attention round a token's row alike in every pass, so prompt-lookup
        checks keep plain greedy's ids by construction; nothing changes where the CPU rounds a linear layer's rows
        differently by pass whatever the tile, and where it does so for the row attention (`rows_alike`), the
        packed linears stay and bf16 answers decode without prompt lookup. fp32: the packed linears run every pass
        whole, as torch's fp32 layers do, and their rows differ in the last bits between passes of one and several
        rows as torch's do; the checks keep plain greedy's ids as measured on real answers (tested, and
        benchmarks/answer_speed.py), as they did on transformers' layers. fp32 on a CPU with bf16 instructions
        keeps transformers' layers (generation there runs in bf16 unless asked; not measured)."""
        import torch

        from hftoolkit.generate.decode_pass import DecodePass, fits  # heavy: transformers' Llama model
        from hftoolkit.generate.packed_linear import can_pack, pack_linears  # heavy: torch
        from hftoolkit.generate.row_attention import NAME, use_row_attention  # heavy: transformers' attention registry

        sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        if can_pack(self.model) and sdpa and pack_linears(self.model) and use_row_attention(self.model):
            self.row_passes, self.row_attention = True, NAME
            self.rows_consistent = self.model.dtype == torch.bfloat16
            self.decode_pass = DecodePass(self.model) if fits(self.model) else None

    @property
    def context_length(self) -> int:
        return positions_of(self.model.config)

    def render(self, prompt: str | list[dict], chat: bool, system: str | None = None) -> str:
        """The exact text the model sees: raw prompt, or the chat template applied to it."""
        if not chat:
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError("empty prompt: give some text to continue")
            return prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if not messages or not str(messages[-1].get("content", "")).strip():
            raise UserError("empty prompt: give a question or message")
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        if not self.tokenizer.chat_template:
            raise UserError(f"checkpoint '{self.path}' has no chat template; drop --chat to continue raw text")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, texts: list[str], settings: GenerationSettings, batch_size: int = defaults.GENERATE_BATCH,
                 log=print) -> list[Completion]:
        """Generate for already-rendered texts, `batch_size` at a time, results in input order.

        Batches are formed from prompts of similar length (long prompts with retrieved
        passages next to short ones would otherwise be padded to the longest)."""
        if batch_size < 1:
            raise UserError(f"--batch-size: {batch_size} must be at least 1")
        settings.check_window(self.context_length)
        if settings.sampling and settings.seed is not None:
            batch_size = 1  # a seeded sample must not depend on which prompts share its batch (nor its cache key)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Completion | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            for i, done in zip(chosen, self._generate_batch([texts[i] for i in chosen], settings, log)):
                results[i] = done
        return results

    def _generate_batch(self, texts: list[str], settings: GenerationSettings, log) -> list[Completion]:
        import torch

        started = time.perf_counter()
        inputs = self._encode(texts, settings.max_new_tokens, log)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        kwargs = self._with_prompt_lookup(self._generate_kwargs(settings), len(texts))
        with torch.inference_mode():
            output = self.run_generate(inputs, kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        elapsed = (time.perf_counter() - started) / len(texts)
        completions = []
        for text, ids in zip(texts, new_tokens):
            ids = [int(t) for t in ids]  # after EOS, generate() fills with pad; decode skips both
            completion = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), settings.stop)
            completions.append(Completion(text, completion, self._count_generated(ids), round(elapsed, 4)))
        return completions

    def _with_prompt_lookup(self, kwargs: dict, rows: int) -> dict:
        """Prompt-lookup decoding for one greedy answer: the tokens that followed the latest n-gram where it
        occurs in the prompt (answers copy the retrieved passages) are proposed, and one forward pass checks
        them all; greedy verification keeps exactly plain greedy's ids (tested). In bf16 that holds only with
        row-consistent layers (`speed_up`): torch's fused kernel rounds a pass of several tokens differently
        from one token at a time and changed some answers' ids (benchmarks/answer_speed.py), so other bf16
        models decode plainly. transformers runs it for one row only; batches, beams, sampling and stop strings
        decode as before too."""
        exact = str(self.model.dtype) == "torch.float32" or self.rows_consistent
        if not self.prompt_lookup_tokens or not self._one_greedy_answer(kwargs, rows) \
                or "stop_strings" in kwargs or not exact:
            return kwargs
        return {**kwargs, "prompt_lookup_num_tokens": self.prompt_lookup_tokens}

    def _one_greedy_answer(self, kwargs: dict, rows: int) -> bool:
        """One prompt, no sampling, no beams (the checkpoint's num_beams when the call names none)."""
        beams = kwargs.get("num_beams") or self.model.generation_config.num_beams or 1
        return rows == 1 and not kwargs.get("do_sample") and beams == 1

    def run_generate(self, inputs, kwargs: dict, **extra):
        """`model.generate` for encoded prompts (inside inference mode); beam search, and one greedy answer on
        the row passes (`speed_up`), start from one pass over the prompt."""
        lookup = kwargs.get("prompt_lookup_num_tokens") or 0
        if inputs["input_ids"].shape[1] + kwargs.get("max_new_tokens", 0) + lookup > self.context_length:
            # transformers (5.x) caps the proposals by the prompt's length, not by max_length: near the end of the
            # context a check ran past the model's positions (GPT-2: an IndexError). Plain greedy: the same ids
            kwargs = without_prompt_lookup(kwargs)
        by_rows = self.row_passes and self._one_greedy_answer(kwargs, inputs["input_ids"].shape[0])
        if self.row_passes:
            self.model.set_attn_implementation("sdpa")
        cache = self._prompt_cache(inputs, kwargs.get("num_beams"), alone=by_rows)
        if cache is None or not by_rows:
            if by_rows:  # no prompt pass of its own (a one-token prompt): plain greedy on sdpa
                kwargs = without_prompt_lookup(kwargs)
            return self.model.generate(**inputs, **kwargs, **extra, **({"cache": cache} if cache is not None else {}))
        self.model.set_attn_implementation(self.row_attention)  # after the prompt: the same rounding in any pass
        hook = self.model.register_forward_pre_hook(past_the_cache(cache.get_seq_length()), with_kwargs=True)
        try:
            unwrapped = self.decode_pass.installed() if self.decode_pass is not None else nullcontext()
            with unwrapped:  # these passes run on the row attention, unwrapped where DecodePass fits
                return self.model.generate(**inputs, **kwargs, **extra, cache=cache)
        finally:
            hook.remove()

    def _prompt_cache(self, inputs, num_beams: int | None, alone: bool = False):
        """The prompts' key/value cache, computed in one pass (copied for each beam), or None.

        Beams: generate() copies every prompt num_beams times before its first forward pass, so beam search
        ran each prompt num_beams times; with retrieved passages the prompt is most of the work (short
        answers after ~250 prompt tokens). `alone` (one greedy answer on the row passes): prompt lookup
        would compute the prompt together with the first proposals, so the prompt is computed here by itself,
        with plain decoding and with prompt lookup alike, and only the tokens after it must round alike in
        passes of any length. All but the last prompt token go through the model once here; generate()
        continues from the cache, with the same results (tested). With the unwrapped decode passes
        (`decode_pass.py`, Llama models) the last token goes through here too and is held for the first pass."""
        beams = num_beams or self.model.generation_config.num_beams or 1
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        supports_cache = getattr(self.model, "_supports_default_dynamic_cache", lambda: False)()
        if (beams < 2 and not alone) or ids.shape[1] < 2 or not supports_cache:
            return None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt counts from its first token
        if alone and self.decode_pass is not None:  # the last token too, held for the first decode pass
            return self.decode_pass.prompt_pass(ids, mask, positions)
        cache = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                           use_cache=True, logits_to_keep=1).cache
        if beams > 1:
            cache.batch_repeat_interleave(beams)
        return cache

    def _count_generated(self, ids: list[int]) -> int:
        eos = self.model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos])
        count = 0
        for token in ids:
            count += 1
            if token in stops:
                break
        return count

    def _encode(self, texts: list[str], max_new_tokens: int, log):
        """Tokenize once and pad on the left; prompts too long for the context keep their last tokens."""
        limit = max(1, self.context_length - max_new_tokens)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, row in enumerate(ids):
            if len(row) > limit:
                log(f"warning: prompt of {len(row)} tokens truncated from the left to {limit} "
                    f"(context {self.context_length} minus {max_new_tokens} new tokens)")
                ids[i] = row[-limit:]
        return self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")

    def _generate_kwargs(self, settings: GenerationSettings) -> dict:
        kwargs = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if settings.sampling:
            kwargs.update(do_sample=True, num_beams=1)  # otherwise: the checkpoint's num_beams (default 1)
            if settings.temperature:
                kwargs["temperature"] = settings.temperature
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.num_beams is not None and not settings.sampling:
            kwargs["num_beams"] = settings.num_beams
        for name in ("top_p", "top_k", "repetition_penalty"):
            if getattr(settings, name) is not None:
                kwargs[name] = getattr(settings, name)
        if settings.stop:
            kwargs.update(stop_strings=settings.stop, tokenizer=self.tokenizer)
        return kwargs


def positions_of(config) -> int:
    """How many tokens the model can attend to (prompt plus new tokens)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return 2048


def context_length(checkpoint: str) -> int:
    """The context window from config.json alone, without loading weights."""
    return positions_of(open_config(checkpoint))


def cut_at_stop(text: str, stops: list[str]) -> str:
    """Trim the completion at the first stop string (the stop string itself is dropped)."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text

