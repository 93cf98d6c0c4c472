"""Read back how a checkpoint was made (its recipe.yaml), for use at generation and evaluation time."""

from __future__ import annotations

from pathlib import Path

import yaml


def saved_recipe_dict(checkpoint: str) -> dict:
    recipe_file = Path(checkpoint) / "recipe.yaml"
    return (yaml.safe_load(recipe_file.read_text()) or {}) if recipe_file.is_file() else {}


def saved_system_prompt(checkpoint: str) -> str | None:
    """The system prompt a checkpoint was trained with, so prompts are rendered as in training."""
    return (saved_recipe_dict(checkpoint).get("data") or {}).get("system_prompt")


def saved_sampling(checkpoint: str) -> dict:
    """temperature/top_p/top_k from the checkpoint's generation_config.json when it says do_sample, else {}."""
    import json

    config_file = Path(checkpoint) / "generation_config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except ValueError:
        return {}
    if not config.get("do_sample"):
        return {}
    suggested = {name: config[name] for name in ("temperature", "top_p", "top_k") if config.get(name) is not None}
    return suggested or {"temperature": 1.0}
