"""The floor: a hand-written ASGI app, no framework, that sends exactly the project's bytes.

Routes: ``POST /v1/chat/completions`` (JSON or SSE) and ``POST /ag-ui/agent`` (SSE). It does the
same work as the project (reads the body, parses it with orjson, runs ``workload.answer``,
encodes with ``wire``) and nothing else: no validation beyond what it needs, no disconnect
watcher, no routing table. Whatever the project costs beyond this is the price of its design.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..workload import MODEL, answer
from .wire import (
    JSON_CONTENT_TYPE,
    SSE_HEADERS,
    agui_frames,
    completion_body,
    last_content,
    openai_frames,
    request_id,
)

_NOT_FOUND = (
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,'
    b'"code":"not_found"}}'
)


async def _body(receive: Any) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _send_whole(send: Any, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", JSON_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Any, frames: Any) -> None:
    headers = [*SSE_HEADERS, (b"x-request-id", request_id())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind != "http":
        return
    path = scope["path"]
    if scope["method"] == "POST" and path == "/v1/chat/completions":
        data = orjson.loads(await _body(receive))
        model = data.get("model") or MODEL
        tokens = answer(last_content(data))
        if data.get("stream"):
            await _stream(send, openai_frames(tokens, model))
            return
        content = "".join([token async for token in tokens])
        await _send_whole(send, 200, completion_body(content, model))
        return
    if scope["method"] == "POST" and path == "/ag-ui/agent":
        data = orjson.loads(await _body(receive))
        await _stream(send, agui_frames(answer(last_content(data)), data))
        return
    await _send_whole(send, 404, _NOT_FOUND)
