"""The `recipes` verbs: the bundled recipes, a copy to edit, a recipe with every default filled in."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from hftoolkit.errors import UserError
from hftoolkit.paths import bundled_recipes_dir
from hftoolkit.recipe.load import find_recipe, load_recipe, to_dict


def list_recipes() -> list[dict]:
    return [{"name": path.stem, "description": load_recipe(str(path)).description}
            for path in sorted(bundled_recipes_dir().glob("*.yaml"))]


def copy_recipe(name: str, dest: str) -> Path:
    """Copy a bundled recipe (or accelerate/NAME launch config) to a file or into a folder; never over a file."""
    source = find_recipe(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise UserError(f"'{target}' already exists; choose another destination")
    shutil.copyfile(source, target)
    return target


def show_recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The recipe as YAML with overrides applied and every default filled in."""
    return yaml.safe_dump(to_dict(load_recipe(name, list(overrides))), sort_keys=False)
