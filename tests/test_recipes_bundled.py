"""Every shipped recipe loads and validates; `recipes list/cp/show` work."""

import pytest
import yaml

from hftoolkit.cli import main
from hftoolkit.errors import UserError
from hftoolkit.paths import bundled_recipes_dir
from hftoolkit.recipe.load import load_recipe
from hftoolkit.recipe.validate import validate


def test_every_bundled_recipe_is_valid(tmp_path):
    recipes = sorted(bundled_recipes_dir().glob("*.yaml"))
    assert {"gpt_from_scratch", "cars_lm", "cars_dpo"} <= {p.stem for p in recipes}
    for path in recipes:
        first_line = path.read_text().splitlines()[0]
        assert first_line.startswith(f"# hftoolkit train {path.stem}"), path  # each opens with its command
        recipe = load_recipe(path.stem)
        assert recipe.description, path
        if recipe.training.method == "sft":
            validate(recipe)
            continue
        # preference recipes read pairs a command writes first: until then, one line names that command
        with pytest.raises(UserError, match="does not exist yet; write it with `hftoolkit data mistakes"):
            validate(recipe)
        pairs = tmp_path / f"{path.stem}.jsonl"
        pairs.write_text('{"prompt": "Q?", "chosen": "A.", "rejected": "B."}\n')
        validate(load_recipe(path.stem, [f"data.train={pairs}"]))


def test_list_cp_show(tmp_path, capsys):
    assert main(["recipes", "list"]) == 0
    listing = capsys.readouterr().out
    assert "gpt_from_scratch" in listing and "from scratch" in listing
    assert main(["recipes", "cp", "gpt_from_scratch", str(tmp_path)]) == 0
    copied = tmp_path / "gpt_from_scratch.yaml"
    assert load_recipe(str(copied)).model.from_scratch.architecture == "gpt2"
    assert main(["recipes", "cp", "gpt_from_scratch", str(tmp_path)]) == 2  # never overwrites
    capsys.readouterr()
    assert main(["recipes", "show", "gpt_from_scratch", "training.epochs=1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["epochs"] == 1.0 and shown["training"]["lora"]["enabled"] is False
