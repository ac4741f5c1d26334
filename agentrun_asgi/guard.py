"""The run guard: what the server's dispatcher does around every endpoint it calls.

For every routed HTTP request the guard:
- answers 503 once shutdown has begun (new work is refused; runs in flight go on);
- watches ``receive`` for ``http.disconnect`` once the request body has been read through
  ``Request.body()`` (or ``json()``; before that the endpoint reads ``receive``; an endpoint
  that reads ``receive`` itself is never watched, so its run goes on after a disconnect unless
  the ASGI server's ``send`` fails, which uvicorn's does not) and then cancels the run: the
  agent stops at its next await, an LLM call included, instead of producing for nobody;
- puts the run under a deadline (``request_timeout``), brought closer when shutdown begins
  (``shutdown_grace``);
- is the one boundary for what escapes an endpoint: a generic 500 JSON error if no response
  had started, else a logged error and ``ResponseAborted`` raised to the ASGI server, which
  drops the connection: the client sees a cut-off body, never one that passes for whole (as
  uvicorn and Starlette do with an exception after the head). Tracebacks go to the log only.

A stopped run is answered by whoever knows the wire: ``streaming.run_stream`` ends a started
stream with its protocol's error frame; the guard answers a run whose response had not started
(a non-stream completion) with 504 (deadline) or 503 (shutdown). A disconnect gets no answer.

Cost is the point of how it is built; a JSON request should cost next to nothing beyond its
endpoint. On asyncio a request costs the guard one dict entry (its task -> its ``Request``)
and one list append, made in line by the dispatcher; a ``Run`` (stop reason, deadline timer,
watcher) is made only for a request that needs one: a deadline, a shutdown, or a life long
enough to be watched. A run is stopped with ``Task.cancel()`` (an anyio ``CancelScope`` costs
~18 us per request on uvloop). One sweep per ``WATCH_DELAY``, armed only while requests are in
flight, starts a disconnect watcher for each request that was already there at the previous
sweep and has its body read; it looks only at the requests that arrived since, so its cost
does not grow with the streams held open, and a quick request never gets a watcher (a
disconnect is seen within two periods; uvicorn remembers it, so none is missed). Under another
event loop (trio) an anyio cancel scope does the stopping, and each request has a watcher task
of its own beside the endpoint: hypercorn drops a ``send`` to a gone client without an error,
so without one a run there would go on for nobody until its deadline, or forever.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .errors import NO_RETRY, ClientDisconnect, ProtocolError, ResponseAborted
from .invoker import closed_after_stops
from .requests import header
from .responses import send_error
from .types import Endpoint, Scope, Send

if TYPE_CHECKING:
    from .requests import Request

logger = logging.getLogger("agentrun_asgi")

DISCONNECT = "disconnect"
TIMEOUT = "timeout"
SHUTDOWN = "shutdown"

#: Seconds between sweeps; a request gets a disconnect watcher after one to two of them.
WATCH_DELAY = 0.02

_CLOSE: list[tuple[bytes, bytes]] = [(b"connection", b"close")]


def shutting_down() -> ProtocolError:
    return ProtocolError(
        503, "The server is shutting down; retry on another instance.",
        code="server_shutting_down", headers=_CLOSE,
    )  # fmt: skip


class Run:
    """What the guard knows of one request beyond its being in flight: made only when needed."""

    __slots__ = (
        "deadline", "deadline_is_shutdown", "reason", "request", "scope", "task", "timeout",
        "timer", "watcher",
    )  # fmt: skip

    def __init__(
        self, request: Request, task: asyncio.Task[Any] | None, timeout: float | None
    ) -> None:
        self.request = request
        self.task = task
        self.timeout = timeout
        self.reason: str | None = None
        self.deadline = math.inf
        self.deadline_is_shutdown = False
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None
        #: Other event loops: the anyio cancel scope around the run.
        self.scope: anyio.CancelScope | None = None

    def watch(self) -> None:
        """Start the disconnect watcher (the body is read: ``receive`` is the guard's now)."""
        task = self.task
        if task is not None and self.watcher is None and not task.done():
            self.watcher = task.get_loop().create_task(self._watch())

    async def watch_anyio(self) -> None:
        """Other event loops: watch once the body is read (looked at each ``WATCH_DELAY``)."""
        while not self.request.body_read:
            await anyio.sleep(WATCH_DELAY)
        await self._watch()

    async def _watch(self) -> None:
        receive = self.request.receive
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:  # the server's receive failed: the connection is gone
            logger.debug("receive failed while watching for a disconnect: %r", exc)
        if not self.request.complete:  # after the response, uvicorn says so to every receive
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
            # No reason yet: the scope says when it expired (``stop_error``), and a disconnect
            # during the grace period must still be free to stop the run at once.
            self.scope.deadline = deadline

    def release(self) -> None:
        """The request is over: drop the timer, the watcher and the request's link back."""
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None  # its cancellation's traceback holds this run
        self.request.run = None  # no cycle left for the garbage collector

    def stop_error(self) -> ProtocolError | None:
        """Why the run was stopped, as the error to tell the client; None after a disconnect."""
        reason = self.reason
        if reason is None and self.scope is not None and self.scope.cancel_called:
            reason = SHUTDOWN if self.deadline_is_shutdown else TIMEOUT
        if reason == DISCONNECT:
            return None
        if reason == TIMEOUT:
            if not self.request.body_read and _has_body(self.request.scope):
                # Still waiting for the client's body: its delay, not the agent's (408, which
                # the OpenAI clients may retry: the agent never ran). The rest of the body may
                # still come, so the connection cannot carry another request.
                return ProtocolError(
                    408, "The request body did not arrive within the request timeout of "
                    f"{self.timeout:g} s.", code="request_timeout", headers=_CLOSE,
                )  # fmt: skip
            return ProtocolError(
                504, f"The agent did not finish within the request timeout of {self.timeout:g} s.",
                code="timeout", headers=NO_RETRY,
            )  # fmt: skip
        return shutting_down()


def raise_if_stopped(request: Request) -> None:
    """Before a whole (non-stream) answer goes out: re-raise a stop the agent swallowed.

    The guard stops a run with one ``Task.cancel()``; agent code that takes the
    ``CancelledError`` (a bare ``except``, a library that retries) and returns would otherwise
    have its late answer sent as a 200. The guard then answers as for any stop: 504 past the
    deadline, 503 at shutdown, nothing after a disconnect. (Under other event loops the anyio
    cancel scope cancels again at the next wait, the send included.)
    """
    run = request.run
    if run is not None and run.reason is not None and run.task is not None:
        raise asyncio.CancelledError


def _has_body(scope: Scope) -> bool:
    length = header(scope, b"content-length")
    return length not in (None, b"0") or header(scope, b"transfer-encoding") is not None


def stop_error(run: Run | None) -> ProtocolError | None:
    """Why a request's run was stopped. With no ``Run`` the guard did not stop it: the
    cancellation came from the ASGI server (uvicorn cancels requests when its
    ``--timeout-graceful-shutdown`` runs out), which is a shutdown."""
    return run.stop_error() if run is not None else shutting_down()


class Lifecycle:
    """The requests in flight and the shutdown state, shared by the dispatcher and the server.

    ``runs`` maps each request in flight to its ``Request``, keyed by its asyncio task (or, on
    other event loops, by the request itself); the dispatcher adds and removes entries.
    """

    __slots__ = (
        "_idle", "_waiting", "closing", "fresh", "grace", "not_started", "runs", "sweeping",
        "timeout",
    )  # fmt: skip

    def __init__(self, grace: float, timeout: float | None = None) -> None:
        self.grace = grace
        self.timeout = timeout
        self.closing = False
        self.runs: dict[Any, Request] = {}
        #: Tasks of the requests that arrived since the last sweep (the dispatcher appends).
        self.fresh: list[asyncio.Task[Any]] = []
        #: The loop the sweep runs on (None: not armed). A loop, not a flag: an app object
        #: served again on a new loop (a test, an embedding without lifespan) sweeps there,
        #: and one served by several loops at once (servers in threads) has one sweep for all.
        self.sweeping: asyncio.AbstractEventLoop | None = None
        #: Tasks in flight at the last sweep still waiting for a watcher.
        self._waiting: list[asyncio.Task[Any]] = []
        self._idle: anyio.Event | None = None
        #: Called once when requests arrive and startup has not run (the server's warning that
        #: its hooks never ran); None once told, or once started. Looked at when a sweep is
        #: armed, not per request.
        self.not_started: Callable[[], None] | None = None

    def run_of(self, key: Any, request: Request) -> Run:
        """The request's ``Run``, made now if it has none."""
        run = request.run
        if run is None:
            task = key if isinstance(key, asyncio.Task) else None
            run = request.run = Run(request, task, self.timeout)
        return run

    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        current = self.sweeping
        if current is not None and current.is_running():
            # Another loop serving this app sweeps for both: taking its sweep over, as this
            # once did, dropped the requests it was waiting to watch (never told of a
            # disconnect, their agents ran on for nobody).
            return
        self.sweeping = loop
        loop.call_later(WATCH_DELAY, self._sweep, loop)
        if self.not_started is not None:
            tell, self.not_started = self.not_started, None
            tell()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the requests that lived through a whole period; O(requests that arrived)."""
        if loop is not self.sweeping:
            return  # superseded by a sweep on another loop
        runs = self.runs
        waiting: list[asyncio.Task[Any]] = []
        for task in self._waiting:
            request = runs.get(task)
            own = task.get_loop()
            if request is None or (own is not loop and own.is_closed()):
                continue  # over (or left behind by a loop that was closed mid-request)
            if not request.body_read:
                waiting.append(task)  # still reading its body: look again next time
            elif own is loop:
                self.run_of(task, request).watch()
            else:  # served by another loop at the same time: watched there
                try:
                    own.call_soon_threadsafe(self._watch_on_own_loop, task)
                except RuntimeError:  # that loop closed since: the request is over
                    pass
        # Taken from the list, not by swapping in a new one: another loop's thread may have
        # read ``fresh`` and be about to append to it (a new list would lose that request).
        fresh = self.fresh
        arrived = len(fresh)
        waiting += fresh[:arrived]
        del fresh[:arrived]
        self._waiting = waiting
        if runs:
            loop.call_later(WATCH_DELAY, self._sweep, loop)
        else:
            self.sweeping = None
            self._waiting = []

    def _watch_on_own_loop(self, task: asyncio.Task[Any]) -> None:
        """The sweep's work for a request of another loop, run on that loop (a ``Run`` and its
        watcher belong to the loop of their task)."""
        request = self.runs.get(task)
        if request is not None:
            self.run_of(task, request).watch()

    def finished(self) -> None:
        """A request left ``runs`` after shutdown began: say so if it was the last."""
        if not self.runs and self._idle is not None:
            self._idle.set()

    def _drop_orphans(self) -> None:
        """Forget the requests left in flight by a loop closed mid-request: they can never end
        (nor be stopped: no timer can be set on a closed loop)."""
        runs = self.runs
        for key in [k for k in runs if isinstance(k, asyncio.Task) and k.get_loop().is_closed()]:
            del runs[key]

    def reopen(self) -> None:
        """Serve again (a startup after a shutdown, as when one app object is served twice)."""
        self._drop_orphans()
        self.not_started = None
        self.closing = False
        self._idle = None
        self.sweeping = None
        self.fresh = []
        self._waiting = []

    def begin_shutdown(self) -> None:
        """Refuse new requests and give the runs in flight ``grace`` seconds more.

        Call it on the event loop (it is idempotent). Streams still running at the end of the
        grace period end with their protocol's error frame; non-stream runs get a 503.
        """
        if self.closing:
            return
        self.closing = True
        self._idle = anyio.Event()
        self._drop_orphans()
        deadline = anyio.current_time() + self.grace  # the loop's clock, as timers use
        for key, request in list(self.runs.items()):
            self.run_of(key, request).set_deadline(deadline, shutdown=True)
        if not self.runs:
            self._idle.set()

    async def drain(self) -> None:
        """Wait for the runs in flight to end, and for the sync generators of stopped runs to
        be closed by their steps in flight; bounded by the grace period (and one second)."""
        if self._idle is None:
            return
        with anyio.move_on_after(self.grace + 1.0):
            await self._idle.wait()
            await closed_after_stops()


async def run_anyio(run: Run, endpoint: Endpoint, send: Send) -> tuple[bool, Exception | None]:
    """Other event loops: the endpoint under an anyio cancel scope, its disconnect watcher
    beside it; (finished, error)."""
    async with anyio.create_task_group() as watcher:
        watcher.start_soon(run.watch_anyio)
        try:
            outcome = await _run_scoped(run, endpoint, send)
        finally:
            watcher.cancel_scope.cancel()
    return outcome


async def _run_scoped(run: Run, endpoint: Endpoint, send: Send) -> tuple[bool, Exception | None]:
    with anyio.CancelScope() as cancel_scope:
        run.scope = cancel_scope
        if run.timeout is not None:
            run.set_deadline(anyio.current_time() + run.timeout)
        try:
            await endpoint(run.request, send)
        except Exception as exc:
            return False, exc
        return True, None
    return False, None


async def after_run(
    request: Request, run: Run | None, error: Exception | None, send: Send
) -> None:
    """Answer a run that raised or was stopped (the rare path, kept out of the dispatcher)."""
    if error is None:
        if not request.started:
            stop = stop_error(run)
            if stop is None:
                logger.info("client disconnected; agent run cancelled")
            else:
                logger.warning("agent run stopped: %s", stop.message)
                await answer(send, stop)
    elif isinstance(error, ClientDisconnect):
        pass  # gone before its body was read: nobody to answer
    elif isinstance(error, ProtocolError) and not request.started:
        # Raised by parsing and validation: the client's mistake, answered as such. A 413 was
        # refused before its body was read: close rather than drain a huge upload.
        if error.status == 413:
            error.headers = [*(error.headers or ()), *_CLOSE]
        await answer(send, error)
    elif request.complete:
        # The response went out whole (the agent's cleanup failed after the last frame): there
        # is nothing to abort, and dropping the connection would only lose its keep-alive.
        logger.error("endpoint failed after its response was complete", exc_info=error)
    elif request.started:
        logger.error("endpoint failed after its response started", exc_info=error)
        raise ResponseAborted("the endpoint failed after its response started") from None
    else:
        logger.error("endpoint failed", exc_info=error)
        internal = ProtocolError(500, "Internal server error.", code="internal_error")
        await answer(send, internal)


async def answer(send: Send, error: ProtocolError) -> None:
    """Send ``error`` as the whole response, or, if the endpoint had started one of its own
    and not finished it, have the ASGI server drop the connection: ending that body would pass
    it off as whole."""
    if await send_fallback(send, error):
        return
    try:  # ASGI servers refuse a body message after the last one: then nothing is unfinished
        await send({"type": "http.response.body", "body": b"", "more_body": True})
    except Exception:
        return
    raise ResponseAborted(f"a response had started; could not send a {error.status}")


#: What uvicorn cancels a request with when its ``--timeout-graceful-shutdown`` runs out.
_SERVER_GAVE_UP = "timeout graceful shutdown exceeded"


def server_gave_up(cancelled: BaseException, lifecycle: Lifecycle) -> bool:
    """Whether a cancellation from outside is the ASGI server ending requests at its shutdown:
    once the response is whole, that one ends quietly. Any other (a host app's
    ``asyncio.timeout()`` or task group around the server) goes on up, or the host's timeout
    would never fire (no ``TimeoutError``, the code after the app left unbounded)."""
    return lifecycle.closing or _SERVER_GAVE_UP in str(cancelled)


async def refuse_cancelled(request: Request, send: Send) -> bool:
    """Cancelled from outside (the ASGI server gave up at shutdown): a 503 if nothing was sent.

    True if the response is whole now: that 503, or a stream ended with its last frame.
    """
    if request.complete:
        return True
    if not request.started:
        with anyio.CancelScope(shield=True):
            if await send_fallback(send, shutting_down()):
                return True
            await end_body(send)  # the cancellation goes on up: the connection ends anyway
    return False


async def end_body(send: Send) -> None:
    """End a started response; the connection may be gone already, which is fine."""
    try:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception as exc:  # the client left, or the response was complete already
        logger.debug("could not end the response: %r", exc)


async def send_fallback(send: Send, error: ProtocolError) -> bool:
    """Send ``error`` as a whole response; False if it could not go.

    Only endpoints outside this package can have started a response the guard does not know
    of; ASGI servers refuse a second ``http.response.start`` with an exception.
    """
    try:
        await send_error(send, error)
    except Exception as exc:
        logger.debug("could not send a %d: %r", error.status, exc)
        return False
    return True
