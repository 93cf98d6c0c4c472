"""Is the model hub reachable at all? Asked once, with a short timeout, before a download.

Offline, huggingface_hub retries a failed connection for tens of seconds before
transformers gives up; a hub id that is not in the local cache then costs the
user that wait for one error line. A TCP connect to the endpoint answers in
seconds.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_on_this_machine(repo_id: str) -> bool:
    """Whether a hub model's config is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id huggingface_hub rejects is not cached either
        return False
