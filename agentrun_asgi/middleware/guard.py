"""The run guard: the innermost layer, around the router, owning one request's life.

For every HTTP request that gets this far it:
- answers 503 once shutdown has begun (new work is refused; runs in flight go on);
- watches ``receive`` for ``http.disconnect`` once the request body has been read (before
  that the endpoint reads ``receive`` itself) and then cancels the run: the agent stops at its
  next await, an LLM call included, instead of producing for nobody;
- puts the run under a deadline (``request_timeout``), brought closer when shutdown begins
  (``shutdown_grace``);
- is the one boundary for what escapes an endpoint: a generic 500 JSON error if no response
  had started, else a logged error and a closed body. Tracebacks go to the log only.

A stopped run is answered by whoever knows the wire: ``streaming.run_stream`` ends a started
stream with its protocol's error frame; the guard answers a run whose response had not started
(a non-stream completion) with 504 (deadline) or 503 (shutdown). A disconnect gets no answer.
The watcher is one bare asyncio task per request that reads a body, started lazily (``GET``
routes and requests refused before their body is read never start one) and cancelled without
being awaited; an anyio task group instead costs several event loop turns per request. Under
a non-asyncio loop (trio) there is no watcher: a failing ``send`` still stops a stream.
"""

from __future__ import annotations

import asyncio
import logging

import anyio

from ..errors import ProtocolError
from ..responses import send_error
from ..types import ASGIApp, ASGIMessage, Receive, Scope, Send

logger = logging.getLogger("agentrun_asgi")

#: Where the guard puts the request's ``Run`` in the ASGI scope (an ASGI extension key).
RUN_KEY = "agentrun.run"

DISCONNECT = "disconnect"
TIMEOUT = "timeout"
SHUTDOWN = "shutdown"

_CLOSE: list[tuple[bytes, bytes]] = [(b"connection", b"close")]


def shutting_down() -> ProtocolError:
    return ProtocolError(
        503, "The server is shutting down; retry on another instance.",
        code="server_shutting_down", headers=_CLOSE,
    )  # fmt: skip


class Run:
    """One request's run: the cancel scope that stops it, why it was stopped, whether it streams."""

    __slots__ = ("cancel_scope", "reason", "receive", "started", "timeout", "watcher")

    def __init__(self, timeout: float | None, receive: Receive) -> None:
        self.cancel_scope: anyio.CancelScope | None = None
        self.reason: str | None = None
        #: Set by the endpoint (``run_stream``) once it has sent its response head.
        self.started = False
        self.timeout = timeout
        self.receive = receive
        self.watcher: asyncio.Task[None] | None = None

    async def receive_body(self) -> ASGIMessage:
        """The endpoint's ``receive``: starts the disconnect watcher once the body is in."""
        message = await self.receive()
        if (
            self.watcher is None
            and not message.get("more_body", False)
            and message["type"] == "http.request"
        ):
            # From now on ``receive`` only ever says "disconnect".
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not asyncio (trio): no watcher; a failed send still stops
                return message
            self.watcher = loop.create_task(self._watch())
        return message

    async def _watch(self) -> None:
        receive = self.receive
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:  # the server's receive failed: the connection is gone
            logger.debug("receive failed while watching for a disconnect: %r", exc)
        if self.cancel_scope is not None:
            if self.reason is None or self.reason == SHUTDOWN:
                self.reason = DISCONNECT
            self.cancel_scope.cancel()

    def shut_down(self, deadline: float) -> None:
        """Let the run go on until ``deadline`` at most (shutdown's grace period)."""
        scope = self.cancel_scope
        if scope is not None and deadline < scope.deadline:
            if self.reason is None:
                self.reason = SHUTDOWN
            scope.deadline = deadline

    def stop_error(self) -> ProtocolError | None:
        """Why the run was stopped, as the error to tell the client; None after a disconnect.

        A cancellation that did not come from this run's scope came from the ASGI server
        (uvicorn cancels requests when ``--timeout-graceful-shutdown`` runs out): shutdown.
        """
        reason = self.reason
        if reason is None:
            scope = self.cancel_scope
            reason = TIMEOUT if scope is not None and scope.cancel_called else SHUTDOWN
        if reason == DISCONNECT:
            return None
        if reason == TIMEOUT:
            return ProtocolError(
                504, f"The agent did not finish within the request timeout of {self.timeout:g} s.",
                code="timeout",
            )  # fmt: skip
        return shutting_down()


class Lifecycle:
    """Shutdown state shared by the guard and the server: the closing flag, the runs in flight."""

    __slots__ = ("_idle", "closing", "grace", "runs")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.closing = False
        self.runs: set[Run] = set()
        self._idle: anyio.Event | None = None

    def reopen(self) -> None:
        """Serve again (a startup after a shutdown, as when one app object is served twice)."""
        self.closing = False
        self._idle = None

    def begin_shutdown(self) -> None:
        """Refuse new requests and give the runs in flight ``grace`` seconds more.

        Call it on the event loop (it is idempotent). Streams still running at the end of the
        grace period end with their protocol's error frame; non-stream runs get a 503.
        """
        if self.closing:
            return
        self.closing = True
        self._idle = anyio.Event()
        deadline = anyio.current_time() + self.grace
        for run in self.runs:
            run.shut_down(deadline)
        if not self.runs:
            self._idle.set()

    async def drain(self) -> None:
        """Wait for the runs in flight to end; bounded by the grace period (and one second)."""
        if self._idle is None:
            return
        with anyio.move_on_after(self.grace + 1.0):
            await self._idle.wait()

    def finished(self, run: Run) -> None:
        runs = self.runs
        runs.discard(run)
        if not runs and self._idle is not None:
            self._idle.set()


class RunGuard:
    """The guard layer (see the module docstring); ``app`` is the router."""

    __slots__ = ("app", "lifecycle", "timeout")

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, timeout: float | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {timeout!r}")
        self.app = app
        self.lifecycle = lifecycle
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self.lifecycle
        if lifecycle.closing:
            await send_error(send, shutting_down())
            return
        run = Run(self.timeout, receive)
        scope[RUN_KEY] = run
        lifecycle.runs.add(run)
        done = False
        error: Exception | None = None
        try:
            with anyio.CancelScope() as cancel_scope:
                run.cancel_scope = cancel_scope
                if self.timeout is not None:
                    cancel_scope.deadline = anyio.current_time() + self.timeout
                try:
                    await self.app(scope, run.receive_body, send)
                    done = True
                except Exception as exc:
                    error = exc
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (the ASGI server gave up waiting at shutdown).
            if not run.started and not done:
                with anyio.CancelScope(shield=True):
                    await send_fallback(send, shutting_down())
            raise
        finally:
            if run.watcher is not None:
                run.watcher.cancel()
            lifecycle.finished(run)

        if error is not None:
            await self._failed(run, error, send)
        elif not done and not run.started:
            stop = run.stop_error()
            if stop is None:
                logger.info("client disconnected; agent run cancelled")
            else:
                logger.warning("agent run stopped: %s", stop.message)
                await send_fallback(send, stop)

    @staticmethod
    async def _failed(run: Run, error: Exception, send: Send) -> None:
        if run.started:
            logger.error("endpoint failed after its response started", exc_info=error)
            await end_body(send)
        else:
            logger.error("endpoint failed", exc_info=error)
            await send_fallback(
                send, ProtocolError(500, "Internal server error.", code="internal_error")
            )


async def end_body(send: Send) -> None:
    """End a started response; the connection may be gone already, which is fine."""
    try:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception as exc:  # the client left, or the response was complete already
        logger.debug("could not end the response: %r", exc)


async def send_fallback(send: Send, error: ProtocolError) -> None:
    """Send ``error`` as a whole response; if a response had started already, end it instead.

    Only endpoints outside this package can have started a response the guard does not know
    of; ASGI servers refuse a second ``http.response.start`` with an exception.
    """
    try:
        await send_error(send, error)
    except Exception as exc:
        logger.debug("could not send a %d (%r); ending the response", error.status, exc)
        await end_body(send)
