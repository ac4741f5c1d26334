"""The FastAPI shim: the only module that imports FastAPI, and only when called."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

if TYPE_CHECKING:
    from .server import AgentRunServer


def build_fastapi_app(server: AgentRunServer, **fastapi_kwargs: Any) -> FastAPI:
    """A FastAPI app whose every path is answered by ``server``, streaming included.

    The server is mounted at the root, so that ``parent.mount("/agent", app)`` serves
    ``/agent/v1/chat/completions``: Starlette's ``Mount`` sets ``root_path``, and the server
    routes on the path relative to it. A mounted app gets no lifespan events of its own, so the
    server's startup and shutdown run from the FastAPI app's lifespan.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    fastapi_kwargs.setdefault("lifespan", lifespan)
    app = FastAPI(**fastapi_kwargs)
    app.mount("/", server)
    return app
