"""Serve a checkpoint over HTTP: OpenAI-compatible routes and a chat page (`hftoolkit serve`).

    from hftoolkit.serve import create_app     # the ASGI app, to mount in your own service
    from hftoolkit.serve import serve          # what `hftoolkit serve` runs
"""

from hftoolkit.serve.run import serve
from hftoolkit.serve.server import create_app

__all__ = ["create_app", "serve"]
