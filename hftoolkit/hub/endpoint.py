"""Is the model hub reachable at all? Asked once, with a short timeout, before a download; and every hub
request bounded in time.

Offline, huggingface_hub retries a failed connection for tens of seconds before
transformers gives up; a hub id that is not in the local cache then costs the
user that wait for one error line. A TCP connect to the endpoint answers in
seconds. A server that accepts and never answers would hold huggingface_hub's
client forever (its httpx client has no timeout), so `bound_hub_requests`
gives it one: HFTOOLKIT_NETWORK_TIMEOUT seconds (default 30) per connect, read
or write.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from hftoolkit.errors import UserError


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def network_timeout() -> float:
    """Seconds any one network wait may take (connect, read, write): HFTOOLKIT_NETWORK_TIMEOUT, default 30."""
    try:
        return max(0.1, float(os.environ.get("HFTOOLKIT_NETWORK_TIMEOUT", "30")))
    except ValueError:
        return 30.0


_bounded = False


def bound_hub_requests() -> None:
    """Give huggingface_hub's HTTP client (and so transformers' and datasets' hub calls) our timeout; once."""
    global _bounded
    if _bounded:
        return
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils import _http

    seconds = network_timeout()

    def bounded_client():
        client = _http.default_client_factory()
        client.timeout = type(client.timeout)(seconds)  # the client's own Timeout class (httpx, or its fork)
        limit = client.timeout.as_dict()

        def bound(request):  # huggingface_hub passes timeout=None per call, which disables the client's own
            waits = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {key: waits.get(key) or value for key, value in limit.items()}

        client.event_hooks["request"] = [*client.event_hooks["request"], bound]
        return client

    set_client_factory(bounded_client)
    constants.HF_HUB_ETAG_TIMEOUT = constants.HF_HUB_DOWNLOAD_TIMEOUT = int(max(1, seconds))
    _bounded = True


def check_hub_dataset(dataset_id: str, field: str) -> None:
    """A hub dataset id must exist and answer before anything expensive starts; one line if not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    where = hub_endpoint()
    if not hub_reachable():
        raise UserError(f"{field}: '{dataset_id}' is not a local file, and the hub at {where} cannot be reached to "
                        "fetch it as a dataset; use a local file, or check HF_ENDPOINT and the network")
    try:
        HfApi(endpoint=where).dataset_info(dataset_id, timeout=network_timeout())
    except RepositoryNotFoundError:
        raise UserError(f"{field}: '{dataset_id}' is not a local file, and the hub at {where} has no dataset by "
                        "that id (or not one this token may read); check the path or the id") from None
    except Exception as exc:  # timeouts and transport errors (httpx), HTTP errors (huggingface_hub)
        waited = f", no answer within {network_timeout():g}s" if "Timeout" in type(exc).__name__ else ""
        raise UserError(f"{field}: fetching the hub dataset '{dataset_id}' from {where} failed "
                        f"({type(exc).__name__}{waited}); use a local file, or check HF_ENDPOINT and the "
                        "network") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    bound_hub_requests()
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=min(timeout, network_timeout())):
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
