"""gunicorn's uvicorn worker, telling the app when the worker begins to shut down.

``gunicorn package.module:server -k agentrun_asgi.gunicorn.UvicornWorker`` (needs
``uvicorn-worker``). uvicorn-worker's own worker serves with a plain uvicorn server, which on
the master's SIGTERM (a deploy, a scale-down) waits for streams in flight without telling them,
until ``--graceful-timeout`` passes and the master kills the worker mid-stream: clients saw the
body cut off. This one begins the app's shutdown at once (``uvicorn_server.Server``), so those
streams end within ``shutdown_grace`` with their protocol's error frame.
"""

from __future__ import annotations

import sys

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped, import-not-found, unused-ignore]
from uvicorn_worker import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    UvicornWorker as _UvicornWorker,
)

from .uvicorn_server import Server


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    async def _serve(self) -> None:
        # uvicorn-worker's own, but for the server class.
        self.config.app = self.wsgi
        server = Server(self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
