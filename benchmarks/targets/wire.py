"""Hand-written encoders for the bytes agentrun-asgi sends, shared by the floor and Starlette.

They follow ``agentrun_asgi/protocols/openai.py`` and ``protocols/agui.py`` key for key and
frame for frame, including how frames are grouped into ``send`` calls and the ``x-request-id``
response header the project adds by default, so that a comparison measures the server around
the encoding, not a different encoding.
``tests/test_benchmarks_smoke.py`` checks that the bytes stay identical to the project's.
"""

from __future__ import annotations

import binascii
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

_dumps = orjson.dumps

JSON_CONTENT_TYPE = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def request_id() -> bytes:
    """A fresh ``x-request-id`` value, as the project makes one (32 hex digits)."""
    return binascii.hexlify(os.urandom(16))


_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
_CHUNK_CLOSE = b',"finish_reason":null}]}\n\n'
_DONE = b"data: [DONE]\n\n"


def last_content(data: dict[str, Any]) -> Any:
    """The content of the last message (what decides between the fast and the slow answer)."""
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return messages[-1].get("content")
    return None


def completion_body(content: str, model: str) -> bytes:
    """A non-stream ``chat.completion`` with the project's keys, in its order."""
    return _dumps(
        {
            "id": "chatcmpl-" + os.urandom(12).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _ZERO_USAGE,
        }
    )


async def openai_frames(tokens: AsyncIterator[str], model: str) -> AsyncIterator[bytes]:
    """The ``chat.completion.chunk`` stream: one send per token, then finish + [DONE] in one."""
    head = _dumps(
        {
            "id": "chatcmpl-" + os.urandom(12).hex(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
    )[:-1]
    open_ = b"data: " + head + b',"choices":[{"index":0,"delta":'
    lead = b'{"role":"assistant","content":'
    async for token in tokens:
        if not token:
            continue
        yield b"".join((open_, lead, _dumps(token), b"}", _CHUNK_CLOSE))
        lead = b'{"content":'
    delta = b'{"role":"assistant"}' if lead[2] == ord("r") else b"{}"
    yield b"".join((open_, delta, b',"finish_reason":"stop"}]}\n\n', _DONE))


def _agui_ids(data: dict[str, Any]) -> tuple[str, str]:
    thread_id = data.get("threadId")
    run_id = data.get("runId")
    return (
        thread_id if isinstance(thread_id, str) and thread_id else str(uuid.uuid4()),
        run_id if isinstance(run_id, str) and run_id else str(uuid.uuid4()),
    )


async def agui_frames(tokens: AsyncIterator[str], data: dict[str, Any]) -> AsyncIterator[bytes]:
    """An AG-UI run of one text message, grouped into sends as the project groups them."""
    thread_id, run_id = _agui_ids(data)
    ids = _dumps({"threadId": thread_id, "runId": run_id})[1:-1]
    yield b'data: {"type":"RUN_STARTED",' + ids + b',"protocolVersion":"1.0"}\n\n'
    message_id = _dumps("msg_" + os.urandom(12).hex())
    content = b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":' + message_id + b',"delta":'
    opened = False
    async for token in tokens:
        if not token:
            continue
        frame = b"".join((content, _dumps(token), b"}\n\n"))
        if not opened:
            opened = True
            frame = (
                b'data: {"type":"TEXT_MESSAGE_START","messageId":' + message_id
                + b',"role":"assistant"}\n\n' + frame
            )  # fmt: skip
        yield frame
    tail = b'data: {"type":"RUN_FINISHED",' + ids + b"}\n\n"
    if opened:
        tail = b'data: {"type":"TEXT_MESSAGE_END","messageId":' + message_id + b"}\n\n" + tail
    yield tail
