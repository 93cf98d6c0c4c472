"""The corpus and index a recipe's data.retrieval names, checked before training loads anything."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.recipe.schema import Recipe
from hftoolkit.retrieval.index import corpus_files
from hftoolkit.retrieval.store import is_index


def check_retrieval_sources(recipe: Recipe) -> None:
    """data.retrieval.index must be an index, or data.retrieval.corpus must exist and the index folder be new
    (or an index already)."""
    retrieval = recipe.data.retrieval
    if retrieval is None:
        return
    if not retrieval.corpus and not is_index(retrieval.index):
        raise UserError(f"data.retrieval.index: '{retrieval.index}' is not an index; build it with `hftoolkit "
                        "index build CORPUS --out INDEX` or set data.retrieval.corpus to build it here")
    if retrieval.corpus:
        corpus_files(retrieval.corpus, "data.retrieval.corpus")
        target = Path(retrieval.index)
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not is_index(target))):
            raise UserError(f"data.retrieval.index: '{retrieval.index}' exists and is not an index; choose a new folder")
