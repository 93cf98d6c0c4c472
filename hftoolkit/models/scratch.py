"""From-scratch models: a tokenizer trained on the corpus, and a fresh model from a config.

Causal architectures get a byte-level BPE (no unknown tokens, EOS and a distinct
pad); BERT-style ones get a WordPiece with [CLS]/[SEP]/[MASK]. Trained tokenizers
are cached on the corpus hash and settings, so repeated runs reuse them.
"""

from __future__ import annotations

import hashlib
import json

from hftoolkit.errors import UserError
from hftoolkit.paths import cache_dir
from hftoolkit.recipe.schema import FromScratch
from hftoolkit.safe_write import replace_cached

WORDPIECE_ARCHS = {"bert", "roberta", "distilbert", "electra"}


def train_tokenizer(texts_iter, settings: FromScratch, corpus_hash: str, log=print):
    """A PreTrainedTokenizerFast trained on `texts_iter` (cached by corpus and settings)."""
    from transformers import AutoTokenizer

    key = hashlib.sha256(json.dumps([corpus_hash, settings.architecture, settings.vocab_size]).encode())
    folder = cache_dir("tokenizers") / key.hexdigest()[:24]
    if (folder / "tokenizer.json").is_file():
        log(f"tokenizer: reusing the one trained on this corpus ({folder})")
        return AutoTokenizer.from_pretrained(str(folder))
    build = _wordpiece if settings.architecture in WORDPIECE_ARCHS else _byte_level_bpe
    tokenizer = build(texts_iter(), settings.vocab_size)
    replace_cached(folder, lambda staging: tokenizer.save_pretrained(str(staging)))
    log(f"tokenizer: trained {type(tokenizer).__name__} with {len(tokenizer)} tokens")
    return tokenizer


def _byte_level_bpe(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|pad|>")


def _wordpiece(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    core.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                      special_tokens=specials))
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def check_scratch_config(settings: FromScratch) -> None:
    """Every key of from_scratch.config must be a setting of the architecture's config class: a typo such as
    n_layers (for gpt2's n_layer) would otherwise be silently ignored."""
    import difflib

    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(settings.architecture)
    except (ValueError, KeyError):
        raise UserError(f"model.from_scratch.architecture: '{settings.architecture}' is not a transformers "
                        "model type; try gpt2, llama or bert") from None
    known = set(config.to_dict()) | set(getattr(type(config), "attribute_map", {}))
    for key in settings.config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"model.from_scratch.config.{key}: not a setting of {type(config).__name__}{hint}")


def scratch_config(settings: FromScratch, tokenizer, max_positions: int):
    """A transformers config for `settings.architecture`, sized to the tokenizer."""
    from transformers import AutoConfig

    extra = dict(settings.config)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": bos}
    try:
        config = AutoConfig.for_model(settings.architecture, vocab_size=len(tokenizer), **ids, **extra)
    except (ValueError, KeyError) as exc:
        raise UserError(f"model.from_scratch.architecture: '{settings.architecture}' is not a transformers "
                        f"model type ({exc}); try gpt2, llama or bert") from None
    for name in ("n_positions", "max_position_embeddings"):
        if hasattr(config, name) and name not in extra:
            setattr(config, name, max(max_positions, 64))
    return config
