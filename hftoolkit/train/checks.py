"""Everything that can be wrong with a recipe before training spends a second on it, in the order the run
meets it: settings (`recipe.validate`), the model, the corpus index, the data's columns."""

from __future__ import annotations

from hftoolkit.data.checks import check_data
from hftoolkit.models.load import check_model
from hftoolkit.recipe.schema import Recipe
from hftoolkit.recipe.validate import validate
from hftoolkit.retrieval.checks import check_retrieval_sources


def check_before_training(recipe: Recipe) -> None:
    """Raise UserError on the first problem, naming the field and the fix."""
    validate(recipe)
    check_model(recipe.model)
    check_retrieval_sources(recipe)
    check_data(recipe)
