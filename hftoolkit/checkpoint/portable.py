"""What a checkpoint says about where it was made: paths relative to the checkpoint, never the user's machine.

A checkpoint is published as it is (push, a copy to a colleague), so its recipe,
model card, retrieval record and logs must not carry absolute local paths
(which name the user, their folders, their temporary files) or the host name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# an absolute path inside free text (JSON, YAML, a log line): a slash or ~/ starting a run of path characters
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:~|/)(?:[\w.+@-]+/)*[\w.+@-]*")
_SQLITE = "sqlite:///"


def portable_path(value: str, checkpoint: Path) -> str:
    """An absolute local path as seen from the checkpoint folder (`../data/train.txt`); anything else (a relative
    path, a bundled:// path, a hub id, a short name) unchanged. A sqlite URI keeps its scheme."""
    if value.startswith(_SQLITE) and len(value) > len(_SQLITE):
        return _SQLITE + portable_path(value[len(_SQLITE):], checkpoint)
    if not value.startswith(("/", "~")):
        return value
    return os.path.relpath(os.path.expanduser(value), Path(checkpoint).resolve())


def portable_recipe(recipe: dict, checkpoint: Path) -> dict:
    """The recipe with every absolute path made relative to the checkpoint; output.dir becomes the folder's name."""
    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return portable_path(value, checkpoint) if isinstance(value, str) else value

    portable = walk(recipe)
    if isinstance(portable.get("output"), dict):
        portable["output"] = {**portable["output"], "dir": Path(checkpoint).resolve().name}
    return portable


def portable_text(text: str, checkpoint: Path) -> str:
    """Free text (a logged config, arguments as JSON) with the checkpoint folder shown as `.` and any other
    absolute path cut to `.../LAST_PART`."""
    root = str(Path(checkpoint).resolve())
    text = text.replace(root, ".").replace(str(checkpoint), ".") if str(checkpoint) not in ("", ".") else text
    return _ABSOLUTE.sub(lambda m: m.group(0) if m.group(0) in ("/", "~") else ".../" + m.group(0).rstrip("/")
                         .rsplit("/", 1)[-1], text)
