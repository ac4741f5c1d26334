"""The ASGI entry point: ``AgentRunServer`` is itself an ASGI app.

``__call__`` takes every ASGI scope: ``lifespan`` (startup and shutdown), ``http`` (routed to
the protocol endpoints through one prefix tree), ``websocket`` (refused cleanly: closed before
accept, which ASGI servers answer with 403).
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ClientDisconnect, ProtocolError
from .invoker import AgentFunc, Invoker
from .protocols.base import ProtocolHandler
from .protocols.openai import OpenAIProtocolHandler
from .requests import DEFAULT_MAX_BODY_SIZE, Request, route_path
from .responses import JSON_HEADERS, send_bytes, send_error
from .routing import Route, Router
from .types import Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("agentrun_asgi")

_HEALTH_BODY = b'{"status":"ok"}'


class AgentRunServer:
    """Serves one agent function over every configured protocol at once.

    >>> def invoke_agent(request):
    ...     return "Hello, world!"
    >>> server = AgentRunServer(invoke_agent=invoke_agent)   # POST /v1/chat/completions
    """

    def __init__(
        self,
        invoke_agent: AgentFunc,
        protocols: Sequence[ProtocolHandler] | None = None,
        prefix_overrides: Mapping[str, str] | None = None,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        health_path: str | None = "/health",
        on_startup: Sequence[Callable[[], Any]] = (),
        on_shutdown: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.invoker = Invoker(invoke_agent)
        self.protocols: list[ProtocolHandler] = (
            list(protocols) if protocols is not None else [OpenAIProtocolHandler()]
        )
        self.prefix_overrides = dict(prefix_overrides or {})
        self.max_body_size = max_body_size
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)

        routes: list[Route] = []
        if health_path:
            routes.append(Route(health_path, self._health, ("GET",), "health"))
        for handler in self.protocols:
            handler.bind(self)
            prefix = self.prefix_for(handler)
            routes.extend(route.with_prefix(prefix) for route in handler.routes())
        self.router = Router(routes)

    def prefix_for(self, handler: ProtocolHandler) -> str:
        name = type(handler).__name__
        if name in self.prefix_overrides:
            return self.prefix_overrides[name]
        prefix = handler.get_prefix()
        return prefix if prefix is not None else handler.default_prefix()

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "not supported"})
        else:
            raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.router.match(route_path(scope))
        if match is None:
            await send_error(send, ProtocolError(404, f"No route for {scope['path']}.",
                                                 code="not_found"))  # fmt: skip
            return
        endpoints, allow, params = match
        endpoint = endpoints.get(scope["method"])
        if endpoint is None:
            error = ProtocolError(
                405, f"Method {scope['method']} is not allowed on {scope['path']}.",
                code="method_not_allowed", headers=[(b"allow", allow)],
            )  # fmt: skip
            await send_error(send, error)
            return
        if params is not None:
            scope["path_params"] = params
        request = Request(scope, receive, self.max_body_size)
        try:
            await endpoint(request, send)
        except ProtocolError as error:
            # Raised by parsing and validation, before any response was started.
            await send_error(send, error)
        except ClientDisconnect:
            pass

    async def _health(self, request: Request, send: Send) -> None:
        await send_bytes(send, 200, _HEALTH_BODY, JSON_HEADERS)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Run the startup hooks; called by ASGI lifespan (or by a host app's own lifespan)."""
        for hook in self.on_startup:
            result = hook()
            if inspect.isawaitable(result):
                await result
        self.log_routes()
        # What is alive now lives as long as the process: freezing it keeps full collections
        # from rescanning it on every request's allocation churn.
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        for hook in self.on_shutdown:
            result = hook()
            if inspect.isawaitable(result):
                await result

    # -- running ---------------------------------------------------------------------------

    def log_routes(self) -> None:
        for route in self.routes:
            methods = ",".join(route.methods)
            logger.info("route %-5s %s (%s)", methods, route.path, route.name)

    def start(
        self, host: str = "0.0.0.0", port: int = 9000, log_level: str = "info", **uvicorn_kwargs: Any
    ) -> None:
        """Serve with uvicorn until interrupted; extra keyword arguments go to ``uvicorn.run``."""
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        if "log_config" not in uvicorn_kwargs:
            config = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
            config["loggers"]["agentrun_asgi"] = {
                "handlers": ["default"], "level": log_level.upper(), "propagate": False,
            }  # fmt: skip
            uvicorn_kwargs["log_config"] = config
        uvicorn.run(self, host=host, port=port, log_level=log_level, **uvicorn_kwargs)

    def as_fastapi_app(self, **fastapi_kwargs: Any) -> FastAPI:
        """A FastAPI app that forwards every request to this server (FastAPI imported here)."""
        from .fastapi import build_fastapi_app

        return build_fastapi_app(self, **fastapi_kwargs)
