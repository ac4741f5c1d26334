"""A uvicorn server that tells the app when it begins to shut down.

uvicorn sends the ASGI lifespan shutdown only once every connection has closed: on a stop
(SIGTERM on a deploy, a ``--reload`` restart) streams in flight go on untold until they end on
their own, uvicorn's ``timeout_graceful_shutdown`` cancels them, or a process manager kills the
worker mid-stream. ``Server`` calls :meth:`AgentRunServer.begin_shutdown` as soon as uvicorn
begins its own shutdown: new requests get 503, runs in flight get ``shutdown_grace``, then
streams end with their protocol's error frame. It serves :meth:`AgentRunServer.start` and
``agentrun_asgi.gunicorn.UvicornWorker``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from .server import AgentRunServer


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: AgentRunServer | None = None) -> None:
        super().__init__(config)
        #: The app to tell; None: the one uvicorn loaded, found when shutdown begins (each
        #: worker process imports the app by name, so it cannot be given here).
        self.agent_server = app

    async def shutdown(self, sockets: Any = None) -> None:
        app = self.agent_server or served_server(getattr(self.config, "loaded_app", None))
        if app is not None:
            app.begin_shutdown()
        await super().shutdown(sockets)


def served_server(app: Any) -> AgentRunServer | None:
    """The ``AgentRunServer`` inside the middleware uvicorn wraps an app in, if it is one."""
    from .server import AgentRunServer

    for _ in range(8):  # uvicorn's wrappers (proxy headers, trace logging...) keep ``.app``
        if isinstance(app, AgentRunServer):
            return app
        app = getattr(app, "app", None)
    return None
