"""hftoolkit's verbs, one function (or class) each, with their defaults: the command line, notebooks and the
HTTP server all call these.

    from hftoolkit import app
    app.train("cars_qa", ["training.epochs=1"], output_dir="runs/cars")
    app.generate("runs/cars", ["How often is brake fluid replaced?"])[0].completion
    app.evaluate("runs/cars", "bundled://corpora/cars/qa/heldout.jsonl")["accuracy"]
"""

from hftoolkit.app.corpus import build_index, search_index
from hftoolkit.app.databases import export_answers, import_files, rate, show_table
from hftoolkit.app.evaluation import evaluate, find_mistakes
from hftoolkit.app.export import convert, list_models, merge, pull_model
from hftoolkit.app.generation import (
                                      Chat,
                                      cache_clear,
                                      cache_stats,
                                      generate,
                                      open_generator,
                                      read_prompts,
                                      request_settings,
                                      stream,
)
from hftoolkit.app.prediction import classify, fill_mask
from hftoolkit.app.recipes import copy_recipe, list_recipes, show_recipe
from hftoolkit.app.sharing import pull, push
from hftoolkit.app.training import quickstart, train

__all__ = ["build_index", "search_index", "export_answers", "import_files", "rate", "show_table", "evaluate",
           "find_mistakes", "convert", "list_models", "merge", "pull_model", "Chat", "cache_clear", "cache_stats",
           "generate", "open_generator", "read_prompts", "request_settings", "stream", "classify", "fill_mask",
           "copy_recipe", "list_recipes", "show_recipe", "pull", "push", "quickstart", "train"]
