"""`hftoolkit serve`: open the checkpoint as `generate` does, build the app, run it with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import threading
import time

from hftoolkit import app as verbs
from hftoolkit import defaults
from hftoolkit.errors import UserError
from hftoolkit.serve.server import create_app


def serve(checkpoint: str, host: str = defaults.SERVE_HOST, port: int = defaults.SERVE_PORT,
          api_key_env: str | None = None, max_batch: int = defaults.SERVE_MAX_BATCH,
          precision: str = defaults.SERVE_PRECISION, log=print, **options) -> None:
    """Serve until interrupted. `options` are `generate`'s (cache, context, request_log, system, ...); the key
    is read from the environment variable `api_key_env`, never from the command line (shells keep history)."""
    import uvicorn

    api_key = _api_key(api_key_env)
    if max_batch < 1:
        raise UserError(f"--max-batch: {max_batch} must be at least 1")
    if not 0 < port < 65536:
        raise UserError(f"--port: {port} is not a TCP port (1-65535)")
    generator = verbs.open_generator(checkpoint, log=log, precision=precision, **options)
    asgi = create_app(generator, max_batch=max_batch, api_key=api_key, log_uri=options.get("request_log"), log=log,
                      start_worker=False)
    if not api_key and not _is_loopback(host):
        log(f"warning: serving on {host} without an API key: anyone who can reach this machine can use the "
            "model; set a key with --api-key-env VAR")
    # HTTP on a thread, the model on this (main) thread: see BatchWorker.run_here
    server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False))
    http = threading.Thread(target=server.run, name="hftoolkit-http", daemon=True)
    http.start()
    while not server.started:
        if not http.is_alive():
            raise UserError(f"--port: could not listen on {host}:{port} (is another server using it?); "
                            "choose another --port")
        time.sleep(0.05)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    log(f"serving {checkpoint} at {where}/v1 (OpenAI-compatible); chat page: {where}/ - Ctrl+C stops")
    try:
        asgi.state.worker.run_here()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=10)


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key.strip():
        raise UserError(f"--api-key-env: the environment variable {variable} is not set or empty; "
                        f"export {variable}=<key> before starting the server")
    return key.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
