"""Drives one event stream: agent items in, encoded frames out to ``send``, as they come.

The encoder is sans-IO (it turns items into bytes); this module owns the I/O around it:
- frames are written as they are produced; ``send`` applies the ASGI server's flow control,
  so a slow reader slows the agent instead of growing a buffer;
- a watcher reads ``receive`` for ``http.disconnect`` and cancels the run at once, even while
  the agent is silently awaiting its model, then the agent's generator is closed (``finally``
  blocks run);
- an exception from the agent ends the stream with the protocol's error frame: the message goes
  to the client, the traceback to the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Protocol

import anyio

from .invoker import StreamItem
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
    await start_event_stream(send, headers)
    receive = request.receive
    disconnected = False

    async with anyio.create_task_group() as tasks:
        scope = tasks.cancel_scope

        async def watch_disconnect() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            scope.cancel()

        tasks.start_soon(watch_disconnect)
        try:
            await _pump(send, events, encoder)
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()
        scope.cancel()

    if disconnected:
        logger.info("client disconnected; agent stream closed")
    else:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(
    send: Send, events: AsyncGenerator[StreamItem, None], encoder: StreamEncoder
) -> None:
    encode = encoder.encode
    try:
        async for item in events:
            data = encode(item)
            if data:
                try:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                except Exception as exc:
                    raise _SendFailed from exc
                if encoder.done:
                    return
        tail = encoder.close()
    except _SendFailed as failed:
        raise failed.__cause__ from None  # type: ignore[misc]
    except Exception as exc:
        logger.exception("agent failed during a stream")
        tail = encoder.error(error_message(exc))
    if tail:
        await send({"type": "http.response.body", "body": tail, "more_body": True})
