"""The preprocessing cache is keyed on content: identical input hits, any relevant change misses."""

from dataclasses import replace

from hftoolkit.data.preprocess import preprocess
from hftoolkit.data.splits import load_data
from hftoolkit.models.scratch import _byte_level_bpe
from hftoolkit.recipe.load import load_recipe

from conftest import tiny_recipe


def run(recipe, tokenizer):
    loaded = load_data(recipe.data, recipe.training.seed)
    return preprocess(recipe, loaded, tokenizer)


def test_hit_and_miss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Brake pads wear down.\n\nTyres need air.\n\nOil keeps engines alive.\n\n" * 5)
    recipe = load_recipe(str(tiny_recipe(tmp_path)), [f"data.train={corpus}", "data.validation=null",
                                                      "data.validation_percent=20"])
    tokenizer = _byte_level_bpe(["brake pads tyres oil engines"] * 10, 300)

    blocks, stats, hit = run(recipe, tokenizer)
    assert not hit and stats["train"]["documents"] == 12 and stats["validation"]["documents"] == 3
    again, _, hit = run(recipe, tokenizer)
    assert hit and again["train"]["input_ids"] == blocks["train"]["input_ids"]

    assert not run(replace(recipe, preprocess=replace(recipe.preprocess, block_size=32)), tokenizer)[2]
    assert not run(recipe, _byte_level_bpe(["completely different words"] * 10, 300))[2]
    corpus.write_text(corpus.read_text() + "Coolant is a mix of water and glycol.\n")
    _, stats, hit = run(recipe, tokenizer)
    assert not hit and stats["train"]["documents"] + stats["validation"]["documents"] == 16
    assert run(recipe, tokenizer)[2]
