"""Drives one event stream: agent items in, encoded frames out to ``send``, as they come.

The encoder is sans-IO (it turns items into bytes); this module owns the I/O around it:
- frames are written as they are produced; ``send`` applies the ASGI server's flow control,
  so a slow reader slows the agent instead of growing a buffer;
- the run is stopped from outside, by the server's run guard (``middleware/guard.py``): on a
  client disconnect, at the request deadline, or at the end of shutdown's grace period. The
  agent is cancelled where it waits, its generator is closed (its ``finally`` runs), and unless
  the client is gone the stream ends with the protocol's error frame saying why;
- an exception from the agent, or an item the encoder cannot serialise, ends the stream with
  the protocol's error frame: the message goes to the client, the traceback to the log;
- a failing ``send`` means the client is gone: the agent is closed and nothing more is sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Protocol

import anyio

from .invoker import StreamItem
from .middleware.guard import RUN_KEY, Run, end_body
from .requests import Request
from .responses import start_event_stream
from .types import RawHeaders, Send

logger = logging.getLogger("agentrun_asgi")

class StreamEncoder(Protocol):
    """What a protocol's streaming encoder provides (see ``protocols/openai.py``)."""

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


async def run_stream(
    request: Request,
    send: Send,
    events: AsyncGenerator[StreamItem, None],
    encoder: StreamEncoder,
    headers: RawHeaders | None = None,
) -> None:
    """Send ``events`` through ``encoder`` as one streaming 200 response."""
    run: Run | None = request.scope.get(RUN_KEY)
    await start_event_stream(send, headers)
    if run is not None:
        run.started = True
    try:
        await _pump(send, events, encoder)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await events.aclose()
            await _end_stopped(send, encoder, run)
        raise
    except _SendFailed as failed:
        logger.info("client gone (send failed: %r); agent stream closed", failed.__cause__)
        with anyio.CancelScope(shield=True):
            await events.aclose()
        return
    except BaseException:
        with anyio.CancelScope(shield=True):
            await events.aclose()
        raise
    # A no-op unless the encoder ended the stream early (the invoker shields its own closing).
    await events.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _end_stopped(send: Send, encoder: StreamEncoder, run: Run | None) -> None:
    """End a stream whose run was stopped from outside: say why, unless the client left."""
    stop = run.stop_error() if run is not None else None
    if run is not None and stop is None:
        logger.info("client disconnected; agent stream closed")
        return
    message = stop.message if stop is not None else "The run was cancelled."
    code = stop.code if stop is not None else "cancelled"
    logger.warning("agent stream stopped: %s", message)
    tail = encoder.error(message, code)
    try:
        if tail:
            await send({"type": "http.response.body", "body": tail, "more_body": True})
    except Exception as exc:
        logger.debug("could not send the final frame: %r", exc)
    await end_body(send)


async def _pump(
    send: Send, events: AsyncGenerator[StreamItem, None], encoder: StreamEncoder
) -> None:
    encode = encoder.encode
    try:
        async for item in events:
            try:
                data = encode(item)
            except Exception as exc:
                # orjson refuses what it cannot represent (a set, an arbitrary object...).
                raise _EncodeFailed(
                    f"the agent emitted an item that cannot be sent: {error_message(exc)}"
                ) from exc
            if data:
                try:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                except Exception as exc:
                    raise _SendFailed from exc
                if encoder.done:
                    return
        tail = encoder.close()
    except _SendFailed:
        raise
    except Exception as exc:
        logger.exception("agent failed during a stream")
        try:
            tail = encoder.error(error_message(exc))
        except Exception:
            logger.exception("the encoder could not write its error frame")
            return
    if tail:
        try:
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        except Exception as exc:
            raise _SendFailed from exc


class _EncodeFailed(Exception):
    """An agent item the protocol encoder could not serialise."""
