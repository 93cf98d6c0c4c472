"""Open a checkpoint's tokenizer and weights: every way a folder can be broken ends in one UserError line.

Generation, prediction, evaluation, training from a local model and merging all
load through here, so a missing tokenizer, a truncated safetensors file or a
corrupt tokenizer.json reads the same everywhere: what is wrong, and what to do.

Weights load from safetensors only: a pickled `.bin` can run code when it is
read, and checkpoints are shared. A model's own Python code (`trust_remote_code`)
runs only when a recipe asks for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hftoolkit.errors import UserError

# transformers builds a model under process-wide context managers (meta-device init, skipped weight init);
# two threads loading at once garbled one model's weights (tests/test_response_cache.py), so loads take turns
LOAD_LOCK = threading.RLock()

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


def open_config(path: str, label: str | None = None):
    """config.json alone (no weights): the window, the head, the labels."""
    from transformers import AutoConfig

    label = label or f"checkpoint '{path}'"
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # json and transformers each raise their own types
        refuse_remote_code(exc, label)
        raise UserError(f"{label} has an unreadable config.json ({_short(exc)}); is it a checkpoint folder?") from None


def open_tokenizer(path: str, label: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a folder (or hub id); `label` names it in errors (default: checkpoint 'PATH')."""
    from transformers import AutoTokenizer

    label = label or f"checkpoint '{path}'"
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{label} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); copy them from "
                        "the base model's folder or save the tokenizer there")
    try:
        with LOAD_LOCK:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # json, tokenizers and sentencepiece each raise their own types
        refuse_remote_code(exc, label)
        raise UserError(f"{label}: its tokenizer could not be loaded ({_short(exc)}); is it complete? re-save "
                        "it or copy the tokenizer files from the base model") from None


def open_model(path: str, auto_class: str, label: str | None = None, trust_remote_code: bool = False, **kwargs):
    """Weights with the given transformers Auto class (e.g. AutoModelForCausalLM), from safetensors only."""
    import transformers

    label = label or f"checkpoint '{path}'"
    check_safetensors(path, label)
    try:
        with LOAD_LOCK:
            return getattr(transformers, auto_class).from_pretrained(path, use_safetensors=True,
                                                                     trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:  # safetensors, json and torch each raise their own types for a bad file
        refuse_remote_code(exc, label)
        raise UserError(f"{label} could not be loaded ({_short(exc)}); is it complete? re-save or re-train "
                        "it") from None


def check_safetensors(path: str, label: str) -> None:
    """A local folder whose weights are only pickles is refused before anything reads them."""
    folder = Path(path)
    if folder.is_dir() and not list(folder.glob("*.safetensors")) and (
            list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth"))):
        raise UserError(f"{label} holds only pickled weights (*.bin/*.pt), which can run code when loaded; "
                        "hftoolkit loads safetensors only: convert them with a tool you trust "
                        "(model.save_pretrained(..., safe_serialization=True)) and try again")


def refuse_remote_code(exc: Exception, label: str) -> None:
    """transformers refuses a model that needs its own code unless trust_remote_code is set: say so plainly."""
    if "trust_remote_code" in str(exc) or "contains custom code" in str(exc):
        raise UserError(f"{label} ships its own Python code, which hftoolkit does not run unless a recipe sets "
                        "model.trust_remote_code: true; set it only if you trust where the model came from") from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
