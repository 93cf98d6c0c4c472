"""Where bundled files and caches live, and the `bundled://` path scheme recipes use."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_SCHEME = "bundled://"


def bundled_recipes_dir() -> Path:
    """The recipes shipped inside the package (package data), so a plain `pip install` has them too."""
    return PACKAGE_DIR / "recipes"


def resolve_data_path(path: str) -> str:
    """`bundled://corpora/cars/text` points into the package, so copied recipes work anywhere."""
    if path.startswith(BUNDLED_SCHEME):
        return str(PACKAGE_DIR / path[len(BUNDLED_SCHEME):])
    return os.path.expanduser(path)


def cache_dir(kind: str) -> Path:
    """A cache folder under $HFTOOLKIT_CACHE (default ~/.cache/hftoolkit)."""
    root = Path(os.environ.get("HFTOOLKIT_CACHE", Path.home() / ".cache" / "hftoolkit"))
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder
