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
