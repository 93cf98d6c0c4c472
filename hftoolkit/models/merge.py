"""LoRA adapter folder → plain merged checkpoint that loads with transformers alone."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hftoolkit.errors import UserError


def merge_adapter(adapter_dir: str, dest: str) -> Path:
    """Fold the adapter weights into the base model and save model + tokenizer to `dest`."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    source, target = Path(adapter_dir), Path(dest)
    config_file = source / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"'{adapter_dir}' has no adapter_config.json; give the adapter folder "
                        "(e.g. RUN/adapter from a LoRA recipe)")
    if target.exists() and any(target.iterdir()):
        raise UserError(f"destination '{dest}' exists and is not empty; choose a new folder")
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load adapter '{adapter_dir}' on base '{base}' ({str(exc)[:160]})") from None
    merged = model.merge_and_unload()
    tokenizer_source = next((str(p) for p in (source, source.parent) if (p / "tokenizer_config.json").is_file()),
                            base)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=target.parent))
    try:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
