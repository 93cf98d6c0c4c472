"""Model hub transfers through huggingface_hub: one commit of chosen files up (`push_files`), a pinned
safetensors-only download into a new folder (`pull_checkpoint`).

The endpoint is `endpoint` when given, else HF_ENDPOINT (huggingface_hub reads
it at import); the token comes from where huggingface_hub looks (HF_TOKEN, the
stored login) and never appears in a message. A pull is pinned to the commit
the revision resolved to, recorded in `pulled_from.json`, and never fetches
pickle weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.hub.endpoint import bound_hub_requests, network_timeout
from hftoolkit.redact import redact, remember_secret
from hftoolkit.safe_write import write_new_folder

PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]
PULL_RECORD = "pulled_from.json"
PUSH_RECORD = ".hftoolkit_push.json"  # in the hub repository: the files the last push sent


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    bound_hub_requests()
    return (endpoint or constants.ENDPOINT).rstrip("/")


def _secret() -> str | None:
    from huggingface_hub import get_token

    return get_token()


@contextmanager
def hub_errors(action: str, repo_id: str, endpoint: str):
    """One line per hub failure: bad token, missing repo or revision, unreachable hub. Never the token."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalTokenNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def clean(text: str) -> str:
        remember_secret(_secret())
        return (redact(text).strip().splitlines() or [""])[0][:160]

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
        raise UserError(f"{action} {repo_id}: could not reach the hub at {endpoint} ({type(exc).__name__}: "
                        f"{clean(str(exc))}); check --endpoint/HF_ENDPOINT and the network") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):
            waited = f", no answer within {network_timeout():g}s" if "Timeout" in type(exc).__name__ else ""
            raise UserError(f"{action} {repo_id}: could not reach the hub at {endpoint} ({type(exc).__name__}"
                            f"{waited}); check --endpoint/HF_ENDPOINT and the network") from None
        raise


def check_repo_id(repo_id: str, field: str = "REPO_ID") -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise UserError(f"{field}: '{repo_id}' is not a repository id; use OWNER/NAME, e.g. me/cars-qa")


def push_files(source: Path, files: list[str], repo_id: str, private: bool = False,
               revision: str = defaults.REVISION,
               commit_message: str | None = None, endpoint: str | None = None, prune: bool = False,
               log=print) -> dict:
    """Upload `files` (relative to `source`) as one commit on `revision` (a branch, created when missing). Files we
    send replace their namesakes; nothing else in the repository is touched, since a colleague's README, eval file
    or GGUF there is not ours. The commit records what it sent (PUSH_RECORD); `prune` then deletes only files
    an earlier hftoolkit push sent that this folder no longer has, after naming them."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    where = _endpoint(endpoint)
    api = HfApi(endpoint=where)
    with hub_errors("push", repo_id, where):
        api.whoami()  # a bad token fails here, before any repository is created
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        stale = sorted(set(_pushed_before(api, repo_id, revision)) - set(files))
        if stale and prune:
            log(f"push --prune: deleting {len(stale)} files an earlier hftoolkit push sent that "
                f"{source.name} no longer has: {', '.join(stale)}")
        elif stale:
            log(f"push: {len(stale)} files from an earlier hftoolkit push are not in {source.name} and stay on "
                f"the hub ({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}); pass --prune to delete them")
        kept_ours = [] if prune else stale  # still on the hub and still ours: a later --prune may delete them
        record = json.dumps({"pushed_by": "hftoolkit", "files": sorted(files + kept_ours)}, indent=1).encode()
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(source / name)) for name in files]
        operations.append(CommitOperationAdd(path_in_repo=PUSH_RECORD, path_or_fileobj=record))
        if prune:
            operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
        commit = api.create_commit(repo_id, operations=operations, revision=revision,
                                   commit_message=commit_message or f"Upload {source.name} with hftoolkit")
    return {"repo_id": repo_id, "revision": revision, "commit": commit.oid, "url": commit.commit_url,
            "files": len(files), "stale": stale, "pruned": stale if prune else []}


def _pushed_before(api, repo_id: str, revision: str) -> list[str]:
    """Files the last hftoolkit push to this revision sent that are still there (none for a new repository)."""
    from huggingface_hub import hf_hub_download

    present = set(api.list_repo_files(repo_id, revision=revision))
    if PUSH_RECORD not in present:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = hf_hub_download(repo_id, PUSH_RECORD, revision=revision, endpoint=api.endpoint, local_dir=tmp)
        try:
            sent = json.loads(Path(path).read_text()).get("files", [])
        except ValueError:
            return []  # an edited, broken record: prune nothing rather than guess
    return [name for name in sent if isinstance(name, str) and name in present]


def pull_checkpoint(repo_id: str, dest: str, revision: str = defaults.REVISION, endpoint: str | None = None) -> dict:
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
                              ignore_patterns=[*PICKLE_PATTERNS, PUSH_RECORD])
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        if not (staging / "config.json").is_file():
            raise UserError(f"pull: {repo_id}@{revision} has no config.json; it is not a transformers model")
        (staging / PULL_RECORD).write_text(json.dumps(record, indent=2))

    write_new_folder(dest, write)
    return {**record, "dest": dest, "files": len(files)}
