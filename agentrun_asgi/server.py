"""The ASGI entry point: ``AgentRunServer`` is itself an ASGI app.

``__call__`` takes every ASGI scope: ``lifespan`` (startup and shutdown), ``http`` (through the
layers composed at construction, then ``Dispatcher``: one prefix tree, and the run guard
around the protocol endpoint), ``websocket`` (refused cleanly: closed before accept, which ASGI
servers answer with 403).

An HTTP request goes, top to bottom (a layer whose feature is off is not in the chain):
the user's ``middleware`` -> the request id (``RequestIdMiddleware``; without user middleware
it is given at the entry, with no layer) -> ``AccessLogMiddleware`` -> ``MetricsMiddleware``
-> ``CORSMiddleware`` (preflights, Allow-Origin) -> ``APIKeyMiddleware`` (401) ->
``Dispatcher`` (503 when closing, 404, 405, the run guard: disconnect watcher, deadline, 500
boundary) -> the endpoint.

With no layer at all (the default), a call of the server is a call of the dispatcher, which
gives the request its id; nothing wraps ``send``: the response helpers put the id into the
heads they write, and only an endpoint that writes heads itself (one not marked
``sends_request_id``) is given a ``send`` that adds it.
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .dispatch import Dispatcher
from .guard import Lifecycle
from .invoker import AgentFunc, Invoker
from .middleware.access_log import AccessLogMiddleware
from .middleware.auth import ENV_VAR, APIKeyMiddleware, api_keys_from_env
from .middleware.cors import CORSMiddleware
from .middleware.request_id import (
    RequestIdMiddleware,
    install_log_filter,
    tag_request,
    tagging_endpoint,
    untag_request,
    with_request_id,
)
from .playground import PlaygroundHandler
from .protocols.agui import AGUIProtocolHandler
from .protocols.base import ProtocolHandler
from .protocols.openai import OpenAIProtocolHandler
from .protocols.responses import OpenAIResponsesProtocolHandler
from .requests import DEFAULT_MAX_BODY_SIZE, Request
from .responses import JSON_HEADERS, send_bytes, sends_request_id
from .routing import Route, Router
from .stop_signal import StopSignal
from .types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from .metrics import Metrics

logger = logging.getLogger("agentrun_asgi")

_HEALTH_BODY = b'{"status":"ok"}'

Lifespan = Callable[["AgentRunServer"], AbstractAsyncContextManager[Any]]

#: Whether a startup in this process froze the heap already (:meth:`AgentRunServer.startup`).
_heap_frozen = False


def _str_list(option: str, value: Sequence[str]) -> list[str]:
    """``value`` as a list, refusing a bare string (a ``Sequence[str]`` too, to type checkers).

    ``api_keys="sk-..."`` would otherwise make every character of the key a key of its own.
    """
    if isinstance(value, (str, bytes)):
        # Not echoed: it may be a secret.
        raise TypeError(f"{option} takes a list of strings, such as [value], not a single string")
    return list(value)


def _check_prefix_overrides(overrides: Mapping[str, str], handlers: list[ProtocolHandler]) -> None:
    """Refuse an override that would move nothing: a typo must not leave a protocol silently
    at its default prefix."""
    names = {type(handler).__name__ for handler in handlers}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"prefix_overrides names no handler of this server: {', '.join(unknown)}; it is"
            f" keyed by handler class name, one of: {', '.join(sorted(names))}"
        )
    for name, prefix in overrides.items():
        if not isinstance(prefix, str):
            raise TypeError(f"prefix_overrides[{name!r}] must be a path string, not {prefix!r}")


def uvicorn_log_config(log_level: str | int | None) -> dict[str, Any]:
    """uvicorn's logging config, with the server's logger and every line tagged with its request.

    A dict, not loggers set up here: uvicorn applies it in each process it starts, so the
    workers of ``--workers`` and ``--reload`` tag their lines too. ``log_level`` is what
    uvicorn takes: a name in any case, a ``logging`` number, or None (its default, info).
    """
    from uvicorn.config import LOGGING_CONFIG

    level = log_level.upper() if isinstance(log_level, str) else log_level
    if level is None:
        level = logging.INFO

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "loggers": dict(LOGGING_CONFIG["loggers"]),
        "handlers": {k: dict(v) for k, v in LOGGING_CONFIG["handlers"].items()},
        "formatters": {k: dict(v) for k, v in LOGGING_CONFIG["formatters"].items()},
    }
    config["loggers"]["agentrun_asgi"] = {
        "handlers": ["default"], "level": level, "propagate": False,
    }  # fmt: skip
    config["filters"] = {
        "request_id": {"()": "agentrun_asgi.middleware.request_id.RequestIdFilter"}
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id"]
    # uvicorn's access lines are built from their fields, not from the message the filter
    # prefixes: the id goes into the format instead.
    access = config["formatters"]["access"]
    access["fmt"] = access["fmt"].replace("%(client_addr)s", "[%(request_id)s] %(client_addr)s")
    return config


async def run_hooks(hooks: Sequence[Callable[[], Any]]) -> None:
    """Call startup or shutdown hooks in order, awaiting those that are coroutines."""
    for hook in hooks:
        result = hook()
        if inspect.isawaitable(result):
            await result


class AgentRunServer:
    """Serves one agent function over every configured protocol at once.

    >>> def invoke_agent(request):
    ...     return "Hello, world!"
    >>> server = AgentRunServer(invoke_agent=invoke_agent)   # POST /v1/chat/completions

    Keyword-only options (safe defaults; a feature that is off costs nothing per request):

    - ``max_body_size``: request bodies beyond this many bytes get 413, checked against
      ``Content-Length`` before reading and counted while reading a chunked body.
    - ``health_path``: ``GET`` path answering ``{"status":"ok"}`` (None: no health route). It
      stays open when API keys are on, and answers 503 once shutdown has begun.
    - ``on_startup`` / ``on_shutdown``: callables (sync or async) run at ASGI lifespan startup
      and shutdown, in order.
    - ``lifespan``: ``lifespan(server)`` returning an async context manager, entered after the
      startup hooks and exited before the shutdown hooks (a database pool, an HTTP client...).
      A mapping it yields is merged into the lifespan ``scope["state"]``.
    - ``request_timeout``: seconds an agent run may take (None: no limit). When it passes the
      agent is cancelled; a stream ends with the protocol's error frame (code ``timeout``), a
      non-stream request gets 504 (408 if its body has not all arrived: the client's delay).
    - ``shutdown_grace``: seconds runs in flight get once shutdown begins (new requests get
      503 at once); streams still running then end with the protocol's error frame (code
      ``server_shutting_down``), other runs get 503. Under uvicorn, serve with :meth:`start`
      (or :meth:`uvicorn_server`), which tells the app when shutdown begins; plain
      ``uvicorn`` only does so after its own ``--timeout-graceful-shutdown``.
    - ``api_keys``: keys accepted as ``Authorization: Bearer <key>``; None (the default)
      reads the comma-separated ``AGENTRUN_API_KEYS`` variable, and no keys means no check.
      A refusal is a 401 with an OpenAI error body (``code: "invalid_api_key"``).
    - ``cors_origins``: origins allowed to call from a browser (``["*"]`` for any; None: CORS
      off). ``cors_allow_headers`` (None: whatever the browser asks; ``Content-Type`` and the
      other safelisted names always) and ``cors_max_age`` tune the preflight answer.
    - ``request_id``: give each request an id (a valid incoming ``X-Request-ID`` is kept),
      echo it as ``x-request-id`` and prefix the server's log lines of that request with it.
    - ``playground``: serve the built-in chat page at ``playground_path`` (``GET``; open
      even when API keys are on, as the page asks for the key); False: no such route.
    - ``access_log``: one ``key=value`` line per request on the ``agentrun_asgi.access``
      logger, its fields also set on the record (see ``middleware/access_log.py``).
    - ``metrics``: Prometheus metrics (needs ``prometheus-client``) in a registry of this
      server's own (``server.metrics.registry``), served at ``metrics_path`` (``GET``; None:
      not served). The path is behind the API key like the API unless ``metrics_public``.
    - ``middleware``: ASGI middleware factories (``app -> app``, such as OpenTelemetry's
      ``OpenTelemetryMiddleware``) wrapped around every HTTP request, the first outermost.
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
        lifespan: Lifespan | None = None,
        request_timeout: float | None = None,
        shutdown_grace: float = 10.0,
        api_keys: Sequence[str] | None = None,
        cors_origins: Sequence[str] | None = None,
        cors_allow_headers: Sequence[str] | None = None,
        cors_max_age: int = 600,
        request_id: bool = True,
        playground: bool = True,
        playground_path: str = "/playground",
        access_log: bool = False,
        metrics: bool = False,
        metrics_path: str | None = "/metrics",
        metrics_public: bool = False,
        middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = (),
    ) -> None:
        self.invoker = Invoker(invoke_agent)
        self.protocols: list[ProtocolHandler] = (
            # A handler bound to another server already would have its invoker replaced by
            # ``bind``, and that server would then run this one's agent: this one gets a copy.
            [copy.copy(h) if hasattr(h, "invoker") else h for h in protocols]
            if protocols is not None
            else [OpenAIProtocolHandler(), AGUIProtocolHandler(), OpenAIResponsesProtocolHandler()]
        )
        self.prefix_overrides = dict(prefix_overrides or {})
        self.max_body_size = max_body_size
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)
        self.lifespan = lifespan
        self.state: dict[str, Any] = {}
        self._exit_stack: AsyncExitStack | None = None
        if shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {shutdown_grace!r}")
        if request_timeout is not None and request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout!r}")
        self.lifecycle = Lifecycle(shutdown_grace, request_timeout)
        if self.on_startup or self.on_shutdown or self.lifespan is not None:
            # Unstarted, a host app will not shut it down either: on_shutdown hooks are missed too.
            self.lifecycle.not_started = self._warn_not_started
        self._stop_signal = StopSignal(self.lifecycle.begin_shutdown)
        self.api_keys = list(
            api_keys_from_env() if api_keys is None else _str_list("api_keys", api_keys)
        )
        if api_keys is None and not self.api_keys and ENV_VAR in os.environ:
            # Set, so keys were meant; empty (a secret that was not filled in), so none: the
            # API is open, which must not go unsaid.
            logger.warning("%s is set but holds no key: the API is open to every client "
                           "(unset it, or pass api_keys=[], to mean that)", ENV_VAR)
        cors_origins = None if cors_origins is None else _str_list("cors_origins", cors_origins)
        if cors_allow_headers is not None:
            cors_allow_headers = _str_list("cors_allow_headers", cors_allow_headers)

        routes: list[Route] = []
        if health_path:
            routes.append(Route(health_path, self._health, ("GET",), "health"))
        self.metrics: Metrics | None = None
        if metrics:
            from .metrics import Metrics

            self.metrics = Metrics()
            if metrics_path:
                routes.append(Route(metrics_path, self.metrics.endpoint, ("GET",), "metrics"))
        page = PlaygroundHandler(playground_path) if playground else None
        handlers = [*self.protocols, page] if page else self.protocols
        _check_prefix_overrides(self.prefix_overrides, handlers)
        for handler in handlers:
            handler.bind(self)
            prefix = self.prefix_for(handler)
            routes.extend(route.with_prefix(prefix) for route in handler.routes())
        has_layers = bool(middleware or access_log or metrics or cors_origins or self.api_keys)
        if request_id and not has_layers:
            # Nothing but the endpoint answers: the ones that answer through the response
            # helpers (which add the id themselves) keep the server's own ``send``.
            routes = [
                route
                if getattr(route.endpoint, "sends_request_id", False)
                else replace(route, endpoint=tagging_endpoint(route.endpoint))
                for route in routes
            ]
        self.router = Router(routes)

        # The layers, outermost first: the order a request meets them in.
        layers: list[Callable[[ASGIApp], ASGIApp]] = list(middleware)
        if request_id:
            install_log_filter(logger)
            if middleware:
                layers.append(RequestIdMiddleware)  # the user's layers see its header
        #: Request ids given at the entry, with no layer of their own, for the server's layers
        #: (with none, the dispatcher gives them).
        self._tag_at_entry = request_id and has_layers and not middleware
        if access_log:
            layers.append(AccessLogMiddleware)
        if self.metrics is not None:
            from .metrics import MetricsMiddleware

            layers.append(partial(MetricsMiddleware, metrics=self.metrics, router=self.router))
        if cors_origins:
            methods = sorted({m for route in self.routes for m in route.methods})
            # Readable by a page's script: the OpenAI JS client reads x-should-retry, and
            # without it retries a failed run (the agent's tool calls included) twice.
            exposed = ("x-request-id", "x-should-retry") if request_id else ("x-should-retry",)
            layers.append(partial(
                CORSMiddleware, origins=cors_origins, methods=methods,
                allow_headers=cors_allow_headers, max_age=cors_max_age, expose_headers=exposed,
            ))  # fmt: skip
        if self.api_keys:
            open_paths = [health_path] if health_path else []
            open_paths += page.paths if page else []  # the page asks for the key itself
            if self.metrics is not None and metrics_path and metrics_public:
                open_paths.append(metrics_path)
            layers.append(partial(APIKeyMiddleware, keys=self.api_keys, open_paths=open_paths))
        #: The access log layer, whose logger :meth:`startup` may change.
        self._access_log: AccessLogMiddleware | None = None
        if has_layers:
            app: ASGIApp = Dispatcher(self.router, self.lifecycle, max_body_size)
            for layer in reversed(layers):
                app = layer(app)
                if isinstance(app, AccessLogMiddleware):
                    self._access_log = app
            self._http: ASGIApp = app
            self._entry: ASGIApp = self._asgi
        else:
            # The dispatcher is the entry itself, request ids and all; other scopes come back.
            dispatcher = Dispatcher(
                self.router, self.lifecycle, max_body_size, tag=request_id, other=self._asgi
            )
            # A bound coroutine method, so that servers and frameworks that inspect
            # ``app.__call__`` (uvicorn's ASGI 2/3 detection) see a coroutine function.
            self._http = self._entry = dispatcher.__call__

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

    @property
    def __call__(self) -> ASGIApp:
        """The ASGI app a call of the server runs: ``server(scope, receive, send)``.

        With no layers this is the dispatcher's own ``__call__``, so an HTTP request costs no
        frame of the server's; otherwise it is :meth:`_asgi`. Lifespan goes to ``_asgi`` either
        way.
        """
        return self._entry

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._tag_at_entry:
                await self._http(scope, receive, send)
                return
            token = tag_request(scope)
            send = with_request_id(send)  # for the answers of the server's own layers
            try:
                await self._http(scope, receive, send)
            finally:
                untag_request(token)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "not supported"})
        else:
            raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    @sends_request_id
    async def _health(self, request: Request, send: Send) -> None:
        await send_bytes(send, 200, _HEALTH_BODY, JSON_HEADERS)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.state and isinstance(scope.get("state"), dict):
                    scope["state"].update(self.state)
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
        """Run the startup hooks and enter ``lifespan``; called by ASGI lifespan (or a host app)."""
        self.lifecycle.reopen()
        self._stop_signal.install()
        try:
            await run_hooks(self.on_startup)
            if self.lifespan is not None:
                stack = AsyncExitStack()
                state = await stack.enter_async_context(self.lifespan(self))
                self._exit_stack = stack
                if isinstance(state, Mapping):
                    self.state.update(state)
        except BaseException:
            self._stop_signal.uninstall()  # no shutdown follows a failed startup
            raise
        access = self._access_log
        if access is not None and not access.logger.hasHandlers():
            # Under a bare ``uvicorn module:app`` nothing configured this package's loggers,
            # so the lines would be dropped: they go through uvicorn's logger, as the routes do.
            access.logger = logging.getLogger("uvicorn.error")
        self.log_routes()
        global _heap_frozen
        if not _heap_frozen:
            # What is alive at the process's first startup lives as long as the process: frozen,
            # it is left out of every later full collection, each of which would walk it all
            # again. No collection first: it took ~18 ms of the cold start to find a few hundred
            # objects of import-time garbage. Once only: at a later startup (servers started one
            # after another) the heap holds stopped servers not yet collected, frozen for good.
            _heap_frozen = True
            gc.freeze()

    def _warn_not_started(self) -> None:
        logger.warning(
            "serving requests, but startup never ran: on_startup hooks and lifespan have not "
            "run, and on_shutdown hooks will not (a host app that mounts this server must call "
            "`await server.startup()` and `await server.shutdown()` from its own lifespan; "
            "README, \"Mounted in another app\")"
        )

    def begin_shutdown(self) -> None:
        """Refuse new requests (503) and give runs in flight ``shutdown_grace`` seconds more.

        Call on the event loop; :meth:`shutdown` calls it, and so does the uvicorn server of
        :meth:`start` as soon as uvicorn begins to shut down, and a SIGTERM that the event loop
        handles (granian's workers; ``stop_signal.py``).
        """
        self.lifecycle.begin_shutdown()

    async def shutdown(self) -> None:
        """Let runs in flight finish (within the grace period), exit ``lifespan``, run hooks."""
        self.lifecycle.begin_shutdown()
        self._stop_signal.uninstall()
        await self.lifecycle.drain()
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            await run_hooks(self.on_shutdown)

    # -- running ---------------------------------------------------------------------------

    def log_routes(self) -> None:
        # Under a bare ``uvicorn module:app`` nothing configured this package's logger: say it
        # through uvicorn's own, so the routes show at startup either way.
        out = logger if logger.hasHandlers() else logging.getLogger("uvicorn.error")
        for route in self.routes:
            methods = ",".join(route.methods)
            out.info("route %-5s %s (%s)", methods, route.path, route.name)

    def uvicorn_server(self, **config: Any) -> uvicorn.Server:
        """A ``uvicorn.Server`` for this app that begins the app's shutdown with its own.

        uvicorn sends the lifespan shutdown only once every connection has closed, so on its
        own it would wait for streams without telling them; this server calls
        :meth:`begin_shutdown` first. Keyword arguments go to ``uvicorn.Config``; its
        ``timeout_graceful_shutdown`` defaults to ``shutdown_grace`` plus 5 s, as a backstop.
        """
        import uvicorn

        from .uvicorn_server import Server

        config.setdefault("timeout_graceful_shutdown", int(self.lifecycle.grace + 5))
        return Server(uvicorn.Config(self, **config), self)

    def start(
        self,
        host: str = "0.0.0.0",
        port: int = 9000,
        log_level: str | int | None = "info",
        **uvicorn_kwargs: Any,
    ) -> None:
        """Serve with uvicorn until interrupted; extra keyword arguments go to uvicorn's Config.

        As ``uvicorn.run`` does, Ctrl+C ends it without a traceback, and ``workers`` or
        ``reload``, which need the app as an import string, are refused, not silently ignored.
        """
        if uvicorn_kwargs.get("reload") or (uvicorn_kwargs.get("workers") or 1) > 1:
            raise ValueError(
                "start() serves this object in this process; 'workers' and 'reload' need the"
                " app as an import string: run `uvicorn package.module:server --workers N`"
                " (or `agentrun-asgi serve package.module:function --workers N`)"
            )

        if "log_config" not in uvicorn_kwargs:
            uvicorn_kwargs["log_config"] = uvicorn_log_config(log_level)
        if isinstance(log_level, str):
            log_level = log_level.lower()  # older uvicorn (0.30, our floor) takes lowercase only
        server = self.uvicorn_server(host=host, port=port, log_level=log_level, **uvicorn_kwargs)
        try:
            server.run()
        except KeyboardInterrupt:
            pass  # uvicorn shut down already, then raised the signal again for its caller
        finally:
            uds = uvicorn_kwargs.get("uds")
            if uds and os.path.exists(uds):
                os.remove(uds)  # as uvicorn.run: a stale socket file would refuse connections

    def as_fastapi_app(self, **fastapi_kwargs: Any) -> FastAPI:
        """A FastAPI app that forwards every request to this server (FastAPI imported here)."""
        try:
            from .fastapi import build_fastapi_app
        except ImportError as exc:
            if exc.name != "fastapi":
                raise
            raise ImportError(  # the extra is the fix, as metrics=True says of its own
                "as_fastapi_app() needs FastAPI: pip install 'agentrun-asgi[fastapi]'",
                name="fastapi",
            ) from exc

        return build_fastapi_app(self, **fastapi_kwargs)
