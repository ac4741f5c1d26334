"""The innermost ASGI app: route a request to its endpoint and run the endpoint under the guard.

Everything between the server's layers and the endpoint happens here, in one coroutine: the
503 once shutdown has begun, 404 and 405, the lazy ``Request``, and the run guard of
``guard.py`` (disconnect watcher, deadline, the boundary that turns what an endpoint raises
into a response). Each ASGI layer costs a coroutine and a ``send`` wrapper per request, about
as much as a whole bare-ASGI JSON request's own work, so the always-on parts are not layers.

When the server has no layers, the dispatcher is its entry: it gives the request its id too,
and hands lifespan scopes back to the server.
"""

from __future__ import annotations

import asyncio
import sys

from .errors import ProtocolError
from .guard import (
    Lifecycle,
    after_run,
    refuse_cancelled,
    run_anyio,
    server_gave_up,
    shutting_down,
)
from .ids import new_request_id, request_id_header
from .middleware.request_id import tag_request, untag_request, valid_id
from .requests import Request, route_path
from .responses import send_error
from .routing import Router
from .types import ASGIApp, Endpoint, Receive, Scope, Send

_set_tag = request_id_header.set
_running_loop = asyncio._get_running_loop  # None outside asyncio (trio): no exception to catch
if sys.version_info >= (3, 12):
    _task_of = asyncio.current_task  # C; takes the loop
else:  # current_task() is Python code here, reading the C dict this looks up directly
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    _task_of = _current_tasks.get


#: The endpoints of a path no route has.
_NOWHERE: dict[str, Endpoint] = {}


class Dispatcher:
    """Routes and guards; ``AgentRunServer`` builds one and puts its layers around it."""

    __slots__ = ("lifecycle", "max_body_size", "other", "router", "static", "tag", "timeout")

    def __init__(
        self,
        router: Router,
        lifecycle: Lifecycle,
        max_body_size: int,
        *,
        tag: bool = False,
        other: ASGIApp | None = None,
    ) -> None:
        self.router = router
        self.static = router.static
        self.lifecycle = lifecycle
        self.max_body_size = max_body_size
        self.timeout = lifecycle.timeout
        #: Give each request its id here: the dispatcher is the server's entry (no layers).
        self.tag = tag
        #: Where scopes other than ``http`` go when the dispatcher is the entry (lifespan).
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self.other is None:
                raise RuntimeError(f"unsupported ASGI scope type {scope['type']!r}")
            await self.other(scope, receive, send)
            return
        lifecycle = self.lifecycle
        path = route_path(scope) if scope.get("root_path") else scope["path"]
        endpoints = self.static.get(path)  # the usual path: one lookup, no call
        endpoint = None if endpoints is None else endpoints.get(scope["method"])
        if endpoint is None:
            endpoints, endpoint = self._route(scope, path)
        if endpoint is None or lifecycle.closing:
            await self._refuse(scope, send, path, endpoints is not _NOWHERE)
            return
        if self.tag:
            # One pass over the headers for the two this request needs from them.
            incoming = length = None
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if length is None:
                        length = value
                elif name == b"x-request-id" and incoming is None:
                    incoming = value
            if incoming is None or valid_id(incoming) is None:  # tag_request, in line
                incoming = new_request_id()
            token = _set_tag((b"x-request-id", incoming))
            request = Request(scope, receive, self.max_body_size, length)
        else:
            token = None
            request = Request(scope, receive, self.max_body_size)
        try:
            loop = _running_loop()
            task = None if loop is None else _task_of(loop)
            if loop is None or task is None:  # not asyncio (trio): an anyio cancel scope stops it
                await self._run_anyio(endpoint, request, send)
                return
            # The guard, in line: the request is in flight while it is in ``runs``.
            runs = lifecycle.runs
            runs[task] = request
            lifecycle.fresh.append(task)
            if lifecycle.sweeping is not loop:
                lifecycle.start_sweeping(loop)
            if self.timeout is not None:
                lifecycle.run_of(task, request).set_deadline(loop.time() + self.timeout)
            failure: Exception | None = None
            stopped = False
            try:
                await endpoint(request, send)
            except asyncio.CancelledError as cancelled:
                run = request.run
                if (run is None or run.reason is None) and not (
                    await refuse_cancelled(request, send) and server_gave_up(cancelled, lifecycle)
                ):
                    raise  # not ours: the ASGI server or a host app is giving up on the request
                # Ours, or the server's (its graceful shutdown timed out) with the response
                # ended whole: a 503, or a stream's last frame. Raised on, the server would
                # log that finished response as an application error, with a traceback.
                stopped = run is not None and run.reason is not None
                uncancel = getattr(task, "uncancel", None)  # Python 3.11+
                if uncancel is not None:
                    uncancel()
            except Exception as exc:
                failure = exc
            except BaseException:
                await refuse_cancelled(request, send)
                raise
            finally:
                runs.pop(task, None)  # not del: a re-dispatch here in the same task shares it
                run = request.run
                if run is not None:
                    run.release()
                if lifecycle.closing:
                    lifecycle.finished()
            if failure is not None or stopped:
                try:
                    await after_run(request, run, failure, send)
                finally:
                    failure = None  # its traceback holds this frame: no cycle left behind
        finally:
            if token is not None:
                untag_request(token)

    def _route(self, scope: Scope, path: str) -> tuple[dict[str, Endpoint], Endpoint | None]:
        """The endpoints at a path with parameters, or at one whose first route lacks the
        method; the endpoint for the method, if any (None: a 404 or a 405)."""
        method = scope["method"]
        match = self.router.match(path, method)
        if match is None:
            return _NOWHERE, None
        endpoints, _, params = match
        if params is not None:
            # A host's ``Mount("/t/{tenant}/agent", ...)`` put its own there: kept, as
            # Starlette's routes keep them.
            outer = scope.get("path_params")
            scope["path_params"] = {**outer, **params} if outer else params
        return endpoints, endpoints.get(method)

    async def _refuse(self, scope: Scope, send: Send, path: str, found: bool) -> None:
        """503 once shutdown has begun, else 404 (no such path) or 405 (not that method)."""
        token = tag_request(scope) if self.tag else None
        try:
            if self.lifecycle.closing:
                error = shutting_down()
            elif not found:
                error = ProtocolError(404, f"No route for {scope['path']}.", code="not_found")
            else:
                allow = self.router.match(path)[1]  # type: ignore[index]
                error = ProtocolError(
                    405, f"Method {scope['method']} is not allowed on {scope['path']}.",
                    code="method_not_allowed", headers=[(b"allow", allow)],
                )  # fmt: skip
            await send_error(send, error)
        finally:
            if token is not None:
                untag_request(token)

    async def _run_anyio(self, endpoint: Endpoint, request: Request, send: Send) -> None:
        lifecycle = self.lifecycle
        run = lifecycle.run_of(request, request)
        lifecycle.runs[request] = request
        failure: Exception | None = None
        try:
            done, failure = await run_anyio(run, endpoint, send)
        except BaseException:
            await refuse_cancelled(request, send)
            raise
        finally:
            lifecycle.runs.pop(request, None)
            run.release()
            if lifecycle.closing:
                lifecycle.finished()
        if failure is not None or not done:
            try:
                await after_run(request, run, failure, send)
            finally:
                failure = None
