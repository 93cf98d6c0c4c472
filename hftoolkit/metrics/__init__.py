"""Local evaluate modules (the hub copies are unreachable offline) and a loader for them."""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str, **kwargs):
    """`evaluate.load` on the module shipped in this folder, e.g. load_metric("classification_f1")."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), **kwargs)
