"""LoRA adapter folder → plain merged checkpoint that loads with transformers alone."""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.checkpoint.new_folder import require_new, write_new_folder
from hftoolkit.checkpoint.open import open_tokenizer
from hftoolkit.errors import UserError


def merge_adapter(adapter_dir: str, dest: str) -> Path:
    """Fold the adapter weights into the base model and save model + tokenizer to `dest`."""
    from peft import AutoPeftModelForCausalLM

    source, target = Path(adapter_dir), Path(dest)
    config_file = source / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"'{adapter_dir}' has no adapter_config.json; give the adapter folder "
                        "(e.g. RUN/adapter from a LoRA recipe)")
    require_new(target)
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(source))
    except Exception as exc:  # peft, safetensors and json each raise their own types for a bad adapter
        raise UserError(f"could not load adapter '{adapter_dir}' on base '{base}' ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); is the adapter complete?") from None
    merged = model.merge_and_unload()
    tokenizer_source = next((str(p) for p in (source, source.parent) if (p / "tokenizer_config.json").is_file()),
                            base)
    tokenizer = open_tokenizer(tokenizer_source, f"merge: the tokenizer for '{adapter_dir}' ({tokenizer_source})")

    def write(folder: Path) -> None:
        merged.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    return write_new_folder(target, write)
