"""The `push` and `pull` verbs: a checkpoint folder to a model hub and back."""

from __future__ import annotations

from hftoolkit import defaults
from hftoolkit.checkpoint.publish import push_checkpoint
from hftoolkit.hub.share import pull_checkpoint


def push(checkpoint: str, repo_id: str, private: bool = False, revision: str = defaults.REVISION,
         commit_message: str | None = None, endpoint: str | None = None, include_training_state: bool = False,
         prune: bool = False, log=print) -> dict:
    """One commit of the files hftoolkit wrote in `checkpoint` to `repo_id` (created when missing); files
    others put on the hub are never touched; `prune` deletes only files an earlier push of ours sent."""
    return push_checkpoint(checkpoint, repo_id, private=private, revision=revision, commit_message=commit_message,
                           endpoint=endpoint, include_training_state=include_training_state, prune=prune, log=log)


def pull(repo_id: str, dest: str, revision: str = defaults.REVISION, endpoint: str | None = None) -> dict:
    """Download `repo_id` at `revision` (pinned to its commit, safetensors only) into the new folder `dest`."""
    return pull_checkpoint(repo_id, dest, revision=revision, endpoint=endpoint)
