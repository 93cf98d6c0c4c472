"""GGUF → clean safetensors checkpoint.

transformers de-quantizes a GGUF on load but refuses to `save_pretrained` the
result (its config carries a GGUF quantization_config). Rebuilding the model from
that config without it and loading the state dict gives identical logits and a
plain checkpoint, tokenizer and chat template included.
"""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.safe_write import require_new, write_new_folder


def convert_gguf(gguf_path: str | Path, dest: str | Path, log=print) -> Path:
    """Write a plain HF checkpoint for `gguf_path` into `dest` (must be new or empty)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, dest = Path(gguf_path), Path(dest)
    if not source.is_file():
        raise UserError(f"GGUF file '{source}' does not exist")
    require_new(dest)
    log(f"converting {source.name} (de-quantizing to float32)")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                      dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except Exception as exc:  # gguf raises plain ValueError/KeyError for unreadable files
        raise UserError(f"'{source}' could not be read as a GGUF model ({type(exc).__name__}: "
                        f"{str(exc)[:160]}); is it a complete GGUF file of an architecture transformers knows?"
                        ) from None
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise UserError(f"'{source}': weights did not match the rebuilt model "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    clean.tie_weights()
    clean.generation_config = loaded.generation_config
    _stop_at_end_of_turn(clean, tokenizer)

    def write(folder: Path) -> None:
        clean.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    return write_new_folder(dest, write)


END_OF_TURN = ("<|im_end|>", "<end_of_turn>")  # ChatML (SmolLM2), Gemma


def _stop_at_end_of_turn(model, tokenizer) -> None:
    """Chat models must stop at their end-of-turn token; make it the generation EOS."""
    vocab = tokenizer.get_vocab()
    eos = {tokenizer.eos_token_id, *(vocab[token] for token in END_OF_TURN if token in vocab)} - {None}
    model.generation_config.eos_token_id = sorted(eos) if len(eos) > 1 else tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
