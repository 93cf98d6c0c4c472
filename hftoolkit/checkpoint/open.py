"""Open a checkpoint's tokenizer and weights: every way a folder can be broken ends in one UserError line.

Generation, prediction, evaluation, training from a local model and merging all
load through here, so a missing tokenizer, a truncated safetensors file or a
corrupt tokenizer.json reads the same everywhere: what is wrong, and what to do.
"""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model")


def check_checkpoint(path: str) -> None:
    """A folder with a config and weights (cheap: nothing is loaded)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"checkpoint '{path}' is not a folder; give a folder written by `hftoolkit train` "
                        "or any Hugging Face checkpoint")
    if not (folder / "config.json").is_file():
        raise UserError(f"checkpoint '{path}' has no config.json; is it a checkpoint folder?")
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise UserError(f"checkpoint '{path}' has no weights (*.safetensors); was the run interrupted?")


def open_tokenizer(path: str, label: str | None = None):
    """The tokenizer of a folder (or hub id); `label` names it in errors (default: checkpoint 'PATH')."""
    from transformers import AutoTokenizer

    label = label or f"checkpoint '{path}'"
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{label} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); copy them from "
                        "the base model's folder or save the tokenizer there")
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # json, tokenizers and sentencepiece each raise their own types
        raise UserError(f"{label}: its tokenizer could not be loaded ({_short(exc)}); is it complete? re-save "
                        "it or copy the tokenizer files from the base model") from None


def open_model(path: str, auto_class: str, label: str | None = None, **kwargs):
    """Weights with the given transformers Auto class (e.g. AutoModelForCausalLM)."""
    import transformers

    label = label or f"checkpoint '{path}'"
    try:
        return getattr(transformers, auto_class).from_pretrained(path, **kwargs)
    except Exception as exc:  # safetensors, json and torch each raise their own types for a bad file
        raise UserError(f"{label} could not be loaded ({_short(exc)}); is it complete? re-save or re-train "
                        "it") from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
