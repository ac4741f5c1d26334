"""Drives one event stream: agent items in, encoded frames out to ``send``, as they come.

The encoder is sans-IO (it turns items into bytes); this module owns the I/O around it:
- frames are written as they are produced; ``send`` applies the ASGI server's flow control,
  so a slow reader slows the agent instead of growing a buffer;
- the run is stopped from outside, by the server's run guard (``guard.py``): on a
  client disconnect, at the request deadline, or at the end of shutdown's grace period. The
  agent is cancelled where it waits, its generator is closed (its ``finally`` runs), and unless
  the client is gone the stream ends with the protocol's error frame saying why;
- an exception from the agent, or an item the encoder cannot serialise, ends the stream with
  the protocol's error frame: the message goes to the client, the traceback to the log;
- a failing ``send`` means the client is gone: the agent is closed and nothing more is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Any, Protocol

import anyio

from .guard import stop_error
from .invoker import AgentOutputError, StreamItem, aclose, agent_error, expand
from .models import AgentEvent
from .requests import Request
from .responses import start_event_stream
from .types import RawHeaders, Send

logger = logging.getLogger("agentrun_asgi")

#: A burst of ready frames is written once it reaches this many bytes, without waiting for more.
MAX_CHUNK = 64 * 1024
#: Seconds the last frame of a stopped stream may wait on a client that reads nothing. The
#: run is over by then; past this its task, buffers and place in shutdown's drain are let go.
LAST_WRITE_TIMEOUT = 2.0


class StreamEncoder(Protocol):
    """What a protocol's streaming encoder provides (see ``protocols/openai.py``).

    It may also have ``start() -> bytes``: the run's opening frame, sent with the response head
    before the agent is called (AG-UI's ``RUN_STARTED``; see ``protocols/agui.py``).
    """

    #: True once the encoder has written a terminal frame (an error): stop feeding it.
    done: bool

    def encode(self, item: StreamItem) -> bytes:
        """The frames for one item (``b""`` when the protocol sends nothing for it)."""

    def error(self, message: str, code: str | None = None) -> bytes:
        """The frames that end the stream on a failure."""

    def close(self) -> bytes:
        """The frames that end a stream that ran to completion."""


class _SendFailed(Exception):
    """``send`` itself raised: the connection is the problem, not the agent."""


def error_message(exc: BaseException) -> str:
    """What the client is told of an exception: its message, never its traceback."""
    text = str(exc)
    return text if text else type(exc).__name__


def unsendable(exc: BaseException) -> str:
    """The error for an item orjson refused (a set, an arbitrary object...)."""
    return f"the agent emitted an item that cannot be sent: {error_message(exc)}"


async def run_stream(
    request: Request,
    send: Send,
    events: AsyncIterator[Any] | Awaitable[AsyncIterator[Any]],
    encoder: StreamEncoder,
    headers: RawHeaders | None = None,
) -> None:
    """Send the agent's items through ``encoder`` as one streaming 200 response.

    The response is ``text/event-stream`` unless ``headers`` has a ``content-type`` of its own
    (a header there replaces the default of the same name).

    ``events`` is an async iterator of items, or an awaitable giving one (``invoker.open``:
    the agent is then called after the response head went out, so that its failure is an
    error frame too). Items that are not ``str`` or ``AgentEvent`` are expanded by
    :func:`invoker.expand`.
    """
    await start_event_stream(send, headers)
    request.started = True
    start = getattr(encoder, "start", None)
    if start is not None:
        # The run's opening frame goes out with the head, before the agent is even called.
        await send({"type": "http.response.body", "body": start(), "more_body": True})
    items: AsyncIterator[Any] | None = None
    try:
        if not hasattr(events, "__anext__"):
            try:
                events = await events
            except BaseException as exc:
                error = agent_error(exc, request)
                if error is None:
                    raise
                try:
                    logger.error("agent failed during a stream", exc_info=error)
                    await _send_last(send, encoder.error(error_message(error)))
                finally:
                    error = None  # its traceback holds this frame: no cycle left behind
                return
        items = events  # type: ignore[assignment]
        await _pump(send, items, encoder, request)  # type: ignore[arg-type]
        request.complete = True  # before closing the agent, which may await its cleanup
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            if items is not None:
                await _close_stopped(items)
            await _end_stopped(send, encoder, request)
        raise
    except _SendFailed as failed:
        logger.info("client gone (send failed: %r); agent stream closed", failed.__cause__)
        with anyio.CancelScope(shield=True):
            await aclose(items)  # type: ignore[arg-type]
        return
    except BaseException:
        with anyio.CancelScope(shield=True):
            if items is not None:
                await aclose(items)
        raise
    # A no-op unless the encoder ended the stream early (the invoker shields its own closing).
    if items is not None:
        await aclose(items)


async def _send_last(send: Send, tail: bytes) -> None:
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _close_stopped(items: AsyncIterator[Any]) -> None:
    """Close the agent of a stopped run; what its cleanup raises is logged: the run is still a
    stopped one, and its stream still ends as such."""
    try:
        await aclose(items)
    except Exception as exc:
        logger.warning("the agent failed while it was being closed", exc_info=exc)


async def _end_stopped(send: Send, encoder: StreamEncoder, request: Request) -> None:
    """End a stream whose run was stopped from outside: say why, unless the client left."""
    stop = stop_error(request.run)
    if stop is None:
        logger.info("client disconnected; agent stream closed")
        return
    logger.warning("agent stream stopped: %s", stop.message)
    tail = encoder.error(stop.message, stop.code)
    with anyio.move_on_after(LAST_WRITE_TIMEOUT) as bound:
        try:
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            request.complete = True
        except Exception as exc:
            logger.debug("could not send the final frame: %r", exc)
    if bound.cancelled_caught:
        # Returning with the body unfinished makes the ASGI server close the connection
        # (uvicorn's close waits for its write buffer: the socket lasts while the client does).
        logger.warning("client read nothing for %g s; last frame dropped", LAST_WRITE_TIMEOUT)


class _Resume:
    """Awaits the rest of an ``__anext__()`` that was stepped once by hand and suspended.

    What the step yielded (a future, or a trap of another event loop) is passed up to the task
    driving us, and whatever the task sends or throws back is passed down: the delegation that
    ``await`` itself performs, resumed after its first step.
    """

    __slots__ = ("_step", "_yielded")

    def __init__(self, step: Any, yielded: Any) -> None:
        self._step = step
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        step = self._step
        yielded = self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:  # cancellation included: the step must see it
                try:
                    yielded = step.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = step.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    # trio resumes with an outcome: an ``Error`` holds the exception whose
                    # traceback holds this frame (a cycle, and the request with it).
                    sent = None


async def _unwind(step: Any, exc: BaseException) -> None:
    """End an ``__anext__()`` step that was left paused when the write before it failed.

    While the agent waits inside the step its generator counts as running, so it cannot be
    closed (``aclose()`` raises "already running") and its ``finally`` would never run. The
    failure is thrown in where the agent waits: a stop as itself, a failed send as the
    ``GeneratorExit`` that closing gives; the agent's cleanup is driven to its end here.
    """
    thrown = GeneratorExit() if isinstance(exc, Exception) else exc
    with anyio.CancelScope(shield=True):
        try:
            await _Resume(step, step.throw(thrown))
        except (StopIteration, StopAsyncIteration):
            pass  # the agent took the exception and returned (or ended): the run is over anyway
        except (Exception, GeneratorExit, anyio.get_cancelled_exc_class()) as unwound:
            if unwound is not thrown:
                logger.warning("the agent failed while it was being closed", exc_info=unwound)


async def _pump(
    send: Send, items: AsyncIterator[Any], encoder: StreamEncoder, request: Request
) -> None:
    """Encode items as they come and write them, coalescing the frames that are ready together.

    Each ``__anext__()`` is first stepped by hand: if the agent has its next item ready, the
    step returns it at once and its frames join the pending chunk; only when the agent
    suspends (awaits its model, sleeps) is the pending chunk written, before waiting. So no
    frame ever waits for another, and a burst of ready items costs one ``send``, not one each.
    Each frame stays a separate SSE event; ``MAX_CHUNK`` bounds a burst.

    The guard stops a run with one ``Task.cancel()``, which an agent can swallow and go on
    yielding; an item that comes back from a wait after the stop ends the stream there.
    """
    encode = encoder.encode
    anext_ = type(items).__anext__
    pending: list[bytes] = []
    size = 0
    try:
        while True:
            step: Any = anext_(items)
            step_send = getattr(step, "send", None)
            if step_send is not None:
                try:
                    yielded = step_send(None)
                except StopIteration as ready:
                    item = ready.value  # ready at once: no await, no write yet
                    step = None
                except StopAsyncIteration:
                    break
            if step is not None:
                # The agent suspends (or gave a plain awaitable): write what is ready, then wait.
                if pending:
                    chunk = b"".join(pending)
                    pending.clear()
                    size = 0
                    try:  # _write, in line: this runs once per token of a slow agent
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except BaseException as exc:  # a failed send, or a stop while it waited
                        if step_send is not None:
                            await _unwind(step, exc)
                        if isinstance(exc, Exception):
                            raise _SendFailed from exc
                        raise
                try:
                    item = await (step if step_send is None else _Resume(step, yielded))
                except StopAsyncIteration:
                    break
                run = request.run
                if run is not None and run.reason is not None and run.task is not None:
                    # Stopped, yet the agent took the cancellation and went on (on asyncio
                    # only: an anyio cancel scope cancels again at every wait).
                    raise asyncio.CancelledError
            kind = type(item)
            try:
                if kind is str or kind is AgentEvent:
                    data = encode(item)
                else:
                    data = _encode_expanded(encoder, item)
            except AgentOutputError:
                raise
            except Exception as exc:
                # orjson refuses what it cannot represent (a set, an arbitrary object...).
                raise _EncodeFailed(
                    unsendable(exc)
                ) from exc
            if data:
                pending.append(data)
                size += len(data)
                if encoder.done:
                    await _write(send, b"".join(pending), more=False)
                    return
                if size >= MAX_CHUNK:
                    await _write(send, b"".join(pending))
                    pending.clear()
                    size = 0
        pending.append(encoder.close())
    except _SendFailed:
        raise
    except BaseException as exc:
        error = agent_error(exc, request)
        if error is None:
            raise
        try:
            run = request.run
            if run is not None and run.reason is not None and run.task is not None:
                # Stopped, and the agent turned its cancellation into an exception (a
                # ``finally`` that raised): still a stop, ended as one (on asyncio only, as above).
                logger.warning("the agent failed while it was being stopped", exc_info=error)
                raise asyncio.CancelledError from None
            logger.error("agent failed during a stream", exc_info=error)
            try:
                pending.append(encoder.error(error_message(error)))
            except Exception:
                logger.exception("the encoder could not write its error frame")
        finally:
            error = None  # its traceback holds this frame: no cycle left behind
    # The last chunk also ends the body: one write for the tail and the chunked terminator.
    await _write(send, b"".join(pending), more=False)


def _encode_expanded(encoder: StreamEncoder, item: Any) -> bytes:
    """The frames of an item that stands for several (an ``AgentResponse``, whose ``events``
    may hold an ERROR): none after one that ends the stream, as for items yielded one by one."""
    frames = []
    for one in expand(item):
        frames.append(encoder.encode(one))
        if encoder.done:
            break
    return b"".join(frames)


async def _write(send: Send, data: bytes, more: bool = True) -> None:
    try:
        await send({"type": "http.response.body", "body": data, "more_body": more})
    except Exception as exc:
        raise _SendFailed from exc


class _EncodeFailed(Exception):
    """An agent item the protocol encoder could not serialise."""
