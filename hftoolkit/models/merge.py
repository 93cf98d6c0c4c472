"""LoRA adapter folder → plain merged checkpoint that loads with transformers alone."""

from __future__ import annotations

import json
from pathlib import Path

from hftoolkit.checkpoint.open import open_model, open_tokenizer
from hftoolkit.errors import UserError
from hftoolkit.models.load import resolve_model_path
from hftoolkit.safe_write import require_new, write_new_folder

ADAPTER_PICKLES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


def merge_adapter(adapter_dir: str, dest: str, log=print) -> Path:
    """Fold the adapter weights into the base model and save model + tokenizer (safetensors) to `dest`.
    Adapter and base load from safetensors only, like every other checkpoint hftoolkit opens."""
    from peft import PeftModel

    source, target = Path(adapter_dir), Path(dest)
    config_file = source / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"'{adapter_dir}' has no adapter_config.json; give the adapter folder "
                        "(e.g. RUN/adapter from a LoRA recipe)")
    if not (source / "adapter_model.safetensors").is_file():
        pickled = [name for name in ADAPTER_PICKLES if (source / name).is_file()]
        raise UserError(f"adapter '{adapter_dir}' " + (
            f"holds only pickled weights ({', '.join(pickled)}), which can run code when loaded; hftoolkit loads "
            "safetensors only: re-save the adapter with save_pretrained(..., safe_serialization=True)" if pickled
            else "has no adapter_model.safetensors; is the adapter complete?"))
    require_new(target)
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except ValueError:
        raise UserError(f"'{config_file}' is not valid JSON; re-save the adapter") from None
    base_path = base_folder(base, source, log)
    model = open_model(base_path, "AutoModelForCausalLM", f"merge: the base model '{base}'")
    try:
        model = PeftModel.from_pretrained(model, str(source))
    except Exception as exc:  # peft, safetensors and json each raise their own types for a bad adapter
        raise UserError(f"could not load adapter '{adapter_dir}' on base '{base}' ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); is the adapter complete?") from None
    merged = model.merge_and_unload()
    tokenizer_source = next((str(p) for p in (source, source.parent) if (p / "tokenizer_config.json").is_file()),
                            base_path)
    tokenizer = open_tokenizer(tokenizer_source, f"merge: the tokenizer for '{adapter_dir}' ({tokenizer_source})")

    def write(folder: Path) -> None:
        merged.save_pretrained(str(folder))  # safetensors: transformers 5 writes nothing else
        tokenizer.save_pretrained(str(folder))

    return write_new_folder(target, write)


def base_folder(base: str | None, adapter: Path, log) -> str:
    """Where the adapter's base model is: a folder as recorded (relative to the adapter when relative), a known
    model pulled locally (checkpoints record its hub id, never a cache path), or a hub id."""
    if not base:
        raise UserError(f"'{adapter}/adapter_config.json' names no base_model_name_or_path; add the base model")
    for candidate in (adapter / base, Path(base).expanduser()):
        if candidate.is_dir():
            return str(candidate)
    return resolve_model_path(base, log, field=f"merge: base model of '{adapter}'")
