"""The innermost ASGI app: route a request to its endpoint and run the endpoint under the guard.

Everything between the server's layers and the endpoint happens here, in one coroutine: the
503 once shutdown has begun, 404 and 405, the lazy ``Request``, and the run guard of
``guard.py`` (disconnect watcher, deadline, the boundary that turns what an endpoint raises
into a response). Each ASGI layer costs a coroutine and a ``send`` wrapper per request, about
as much as a whole bare-ASGI JSON request's own work, so the always-on parts are not layers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

from .errors import ProtocolError
from .guard import Lifecycle, Run, after_run, run_anyio, send_fallback, shutting_down
from .requests import Request, route_path
from .responses import send_error
from .routing import Router
from .types import Receive, Scope, Send

_current_task = asyncio.current_task


class Dispatcher:
    """Routes and guards; ``AgentRunServer`` builds one and puts its layers around it."""

    __slots__ = ("lifecycle", "max_body_size", "router", "timeout")

    def __init__(
        self,
        router: Router,
        lifecycle: Lifecycle,
        max_body_size: int,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {timeout!r}")
        self.router = router
        self.lifecycle = lifecycle
        self.max_body_size = max_body_size
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self.lifecycle
        if lifecycle.closing:
            await send_error(send, shutting_down())
            return
        match = self.router.match(route_path(scope) if scope.get("root_path") else scope["path"])
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
        run = request.run = Run(self.timeout, request)
        task: asyncio.Task[Any] | None
        try:
            task = _current_task()
        except RuntimeError:  # not asyncio (trio): an anyio cancel scope does the stopping
            task = None
        lifecycle.enter(run, task)
        failure: Exception | None = None
        stopped = False
        try:
            if task is None:
                done, failure = await run_anyio(run, endpoint, request, send)
                stopped = not done and failure is None
            else:
                try:
                    await endpoint(request, send)
                except asyncio.CancelledError:
                    if run.reason is None:
                        raise  # not ours: the ASGI server is giving up on the request
                    stopped = True
                    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
                    if uncancel is not None:
                        uncancel()
        except Exception as exc:
            failure = exc
        except BaseException:
            # Cancelled from outside (the ASGI server gave up waiting at shutdown).
            if not run.started:
                with anyio.CancelScope(shield=True):
                    await send_fallback(send, shutting_down())
            raise
        finally:
            lifecycle.leave(run)
        if failure is not None or stopped:
            try:
                await after_run(run, failure, send)
            finally:
                failure = None  # its traceback holds this frame: no cycle left behind
