"""`hftoolkit push` and `pull`: a checkpoint folder to a model hub and back, through huggingface_hub.

The endpoint is `endpoint` when given, else HF_ENDPOINT (huggingface_hub reads
it at import); the token comes from where huggingface_hub looks (HF_TOKEN, the
stored login) and never appears in a message. A pull is pinned to the commit
the revision resolved to, recorded in `pulled_from.json`, and never fetches
pickle weights.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from hftoolkit.checkpoint.new_folder import write_new_folder
from hftoolkit.errors import UserError

TRAINING_STATE = "checkpoints"  # resumable Trainer state: optimizer, RNG, scheduler
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]
PULL_RECORD = "pulled_from.json"


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _secret() -> str | None:
    from huggingface_hub import get_token

    return get_token()


@contextmanager
def hub_errors(action: str, repo_id: str, endpoint: str):
    """One line per hub failure: bad token, missing repo or revision, unreachable hub. Never the token."""
    from huggingface_hub.errors import (HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    def clean(text: str) -> str:
        secret = _secret()
        first = (text.strip().splitlines() or [""])[0]
        return (first.replace(secret, "***") if secret else first)[:160]

    try:
        yield
    except LocalTokenNotFoundError:
        raise UserError(f"{action}: no hub token; log in with `hf auth login` or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise UserError(f"{action}: {repo_id} has no revision like that on {endpoint}; check --revision") from None
    except RepositoryNotFoundError:
        raise UserError(f"{action}: repository {repo_id} not found on {endpoint} (or not visible with this "
                        "token); check the id and the token") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise UserError(f"{action}: {endpoint} rejected the token (401 unauthorized); log in again with "
                            "`hf auth login` or set HF_TOKEN to a valid token") from None
        if status == 403:
            raise UserError(f"{action}: the token may not write to {repo_id} (403 forbidden); use a token with "
                            "write access") from None
        raise UserError(f"{action}: the hub at {endpoint} answered {status} ({clean(str(exc))})") from None
    except (OSError, ValueError) as exc:  # connection refused, DNS, timeouts (httpx errors are OSErrors or not)
        raise UserError(f"{action}: could not reach the hub at {endpoint} ({type(exc).__name__}: "
                        f"{clean(str(exc))}); check --endpoint/HF_ENDPOINT and the network") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):
            raise UserError(f"{action}: could not reach the hub at {endpoint} ({type(exc).__name__}); check "
                            "--endpoint/HF_ENDPOINT and the network") from None
        raise


def check_repo_id(repo_id: str, field: str = "REPO_ID") -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise UserError(f"{field}: '{repo_id}' is not a repository id; use OWNER/NAME, e.g. me/cars-qa")


def push_checkpoint(folder: str, repo_id: str, private: bool = False, revision: str = "main",
                    commit_message: str | None = None, endpoint: str | None = None,
                    include_training_state: bool = False) -> dict:
    """Upload a checkpoint folder as one commit on `revision` (a branch, created when missing), replacing
    whatever that revision held, so a branch never mixes files of two runs."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    source = Path(folder)
    if not (source / "config.json").is_file() or not list(source.glob("*.safetensors")):
        raise UserError(f"CHECKPOINT: '{folder}' is not a checkpoint folder (config.json and *.safetensors); "
                        "give a folder written by `hftoolkit train`")
    ignore = [] if include_training_state else [f"{TRAINING_STATE}/*"]
    files = [p for p in source.rglob("*") if p.is_file() and (include_training_state or
                                                              p.relative_to(source).parts[0] != TRAINING_STATE)]
    where = _endpoint(endpoint)
    api = HfApi(endpoint=where)
    with hub_errors("push", repo_id, where):
        api.whoami()  # a bad token fails here, before any repository is created
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=str(source), repo_id=repo_id, revision=revision,
                                   commit_message=commit_message or f"Upload {source.name} with hftoolkit",
                                   ignore_patterns=ignore or None,
                                   delete_patterns=["*"])  # the revision mirrors the folder: no stale files
    return {"repo_id": repo_id, "revision": revision, "commit": commit.oid, "url": commit.commit_url,
            "files": len(files)}


def pull_checkpoint(repo_id: str, dest: str, revision: str = "main", endpoint: str | None = None) -> dict:
    """Download a model, pinned to the commit `revision` resolves to, into the new folder `dest`."""
    from huggingface_hub import HfApi, snapshot_download

    check_repo_id(repo_id)
    where = _endpoint(endpoint)
    with hub_errors("pull", repo_id, where):
        info = HfApi(endpoint=where).model_info(repo_id, revision=revision)
    files = [s.rfilename for s in info.siblings or []]
    if not any(f.endswith(".safetensors") for f in files):
        pickles = [f for f in files if Path(f).suffix in {p[1:] for p in PICKLE_PATTERNS}]
        raise UserError(f"pull: {repo_id}@{revision} has no safetensors weights ("
                        f"{'only pickle files: ' + ', '.join(pickles) if pickles else 'no weights'}); hftoolkit "
                        "never loads pickle weights, which can run code. Ask the owner for safetensors")
    record = {"repo_id": repo_id, "revision": revision, "commit": info.sha, "endpoint": where}

    def write(staging: Path) -> None:
        with hub_errors("pull", repo_id, where):
            snapshot_download(repo_id, revision=info.sha, local_dir=str(staging), endpoint=where,
                              ignore_patterns=PICKLE_PATTERNS)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        if not (staging / "config.json").is_file():
            raise UserError(f"pull: {repo_id}@{revision} has no config.json; it is not a transformers model")
        (staging / PULL_RECORD).write_text(json.dumps(record, indent=2))

    write_new_folder(dest, write)
    return {**record, "dest": dest, "files": len(files)}
