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
Cost is the point of how it is built. On asyncio a run is stopped with ``Task.cancel()`` and
its deadline is a loop timer: an anyio ``CancelScope`` costs ~18 us per request on uvloop, about
half of a whole bare-ASGI JSON request. The disconnect watcher is a bare task started by a timer
``WATCH_DELAY`` after the body was read, so quick requests never start one (a disconnect is
then seen within ``WATCH_DELAY``; uvicorn remembers it, so none is missed). Under another
event loop (trio) an anyio cancel scope does the stopping and there is no watcher: a failing
``send`` still stops a stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

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


#: Seconds after the body is read before the disconnect watcher starts.
WATCH_DELAY = 0.02


class Run:
    """One request's run: how to stop it, why it was stopped, whether its response started."""

    __slots__ = (
        "deadline", "deadline_is_shutdown", "reason", "receive", "scope", "started", "task",
        "timeout", "timer", "watch_timer", "watcher",
    )  # fmt: skip

    def __init__(self, timeout: float | None, receive: Receive) -> None:
        self.reason: str | None = None
        #: Set by the endpoint (``run_stream``) once it has sent its response head.
        self.started = False
        self.timeout = timeout
        self.receive = receive
        #: asyncio: the request's task, and the timers that stop it or start the watcher.
        self.task: asyncio.Task[Any] | None = None
        self.deadline = math.inf
        self.deadline_is_shutdown = False
        self.timer: asyncio.TimerHandle | None = None
        self.watch_timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None
        #: Other event loops: the anyio cancel scope around the run.
        self.scope: anyio.CancelScope | None = None

    async def receive_body(self) -> ASGIMessage:
        """The endpoint's ``receive``: arms the disconnect watcher once the body is in."""
        message = await self.receive()
        if (
            self.task is not None
            and self.watch_timer is None
            and not message.get("more_body", False)
            and message["type"] == "http.request"
        ):
            # From now on ``receive`` only ever says "disconnect".
            self.watch_timer = self.task.get_loop().call_later(WATCH_DELAY, self._start_watcher)
        return message

    def _start_watcher(self) -> None:
        if self.task is not None and not self.task.done():
            self.watcher = self.task.get_loop().create_task(self._watch())

    async def _watch(self) -> None:
        receive = self.receive
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:  # the server's receive failed: the connection is gone
            logger.debug("receive failed while watching for a disconnect: %r", exc)
        self.stop(DISCONNECT)

    def stop(self, reason: str) -> None:
        """Stop the run now, once: later reasons only refine why (a disconnect trumps)."""
        if self.reason is not None and self.reason != SHUTDOWN:
            return
        first = self.reason is None
        self.reason = reason
        if first:
            if self.task is not None:
                self.task.cancel()
            elif self.scope is not None:
                self.scope.cancel()

    def _expire(self) -> None:
        self.timer = None
        self.stop(SHUTDOWN if self.timeout is None or self.deadline_is_shutdown else TIMEOUT)

    def set_deadline(self, deadline: float, shutdown: bool = False) -> None:
        """Stop the run at ``deadline`` (loop time) unless it ends first; keep the earlier one."""
        if deadline >= self.deadline:
            return
        self.deadline = deadline
        if shutdown:
            self.deadline_is_shutdown = True
        if self.task is not None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.task.get_loop().call_at(deadline, self._expire)
        elif self.scope is not None:
            self.scope.deadline = deadline
            if shutdown and self.reason is None:
                self.reason = SHUTDOWN

    def shut_down(self, deadline: float) -> None:
        """Let the run go on until ``deadline`` at most (shutdown's grace period)."""
        self.set_deadline(deadline, shutdown=True)

    def release(self) -> None:
        """The run is over: cancel its timers and its watcher."""
        for handle in (self.timer, self.watch_timer):
            if handle is not None:
                handle.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    def stop_error(self) -> ProtocolError | None:
        """Why the run was stopped, as the error to tell the client; None after a disconnect.

        A cancellation that did not come from this run came from the ASGI server (uvicorn
        cancels requests when ``--timeout-graceful-shutdown`` runs out): shutdown.
        """
        reason = self.reason
        if reason is None and self.scope is not None and self.scope.cancel_called:
            reason = SHUTDOWN if self.deadline_is_shutdown else TIMEOUT
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
        deadline = anyio.current_time() + self.grace  # the loop's clock, as timers use
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
        try:
            task = asyncio.current_task()
        except RuntimeError:  # not asyncio
            task = None
        done = False
        error: Exception | None = None
        try:
            if task is None:
                done, error = await self._run_anyio(run, scope, send)
            else:
                # asyncio, inline (the hot path): Task.cancel() stops the run, timers time it.
                run.task = task
                if self.timeout is not None:
                    run.set_deadline(task.get_loop().time() + self.timeout)
                try:
                    await self.app(scope, run.receive_body, send)
                    done = True
                except asyncio.CancelledError:
                    if run.reason is None:
                        raise  # not ours
                    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
                    if uncancel is not None:
                        uncancel()
                except Exception as exc:
                    error = exc
        except BaseException:
            # Cancelled from outside (the ASGI server gave up waiting at shutdown).
            if not run.started:
                with anyio.CancelScope(shield=True):
                    await send_fallback(send, shutting_down())
            raise
        finally:
            run.release()
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

    async def _run_anyio(self, run: Run, scope: Scope, send: Send) -> tuple[bool, Exception | None]:
        with anyio.CancelScope() as cancel_scope:
            run.scope = cancel_scope
            if self.timeout is not None:
                run.set_deadline(anyio.current_time() + self.timeout)
            try:
                await self.app(scope, run.receive_body, send)
            except Exception as exc:
                return False, exc
            return True, None
        return False, None

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
