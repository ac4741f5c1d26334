"""A tiny in-process ASGI driver: scope in, body fed through ``receive``, messages recorded.

No sockets and no server, so thousands of requests a second (the fuzz tests' bulk). ``send``
checks message order the way uvicorn does (raising on a second ``http.response.start`` or on
anything after the response completed); ``receive`` hands out the body chunks, then blocks
until the response is complete (or ``disconnect`` is set), then says ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    chunks_read: int = 0

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


def make_scope(
    method: str,
    path: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    query_string: bytes = b"",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query_string,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    disconnect: asyncio.Event | None = None,
) -> Response:
    """Run one request through ``app``; ``body`` may be chunks (a chunked upload), lazily made."""
    chunks: Iterator[bytes] = iter([body] if isinstance(body, bytes) else body)
    pending = next(chunks, None)
    response = Response()
    done = asyncio.Event()
    gone = disconnect or asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal pending
        if pending is not None:
            chunk, pending = pending, next(chunks, None)
            response.chunks_read += 1
            return {"type": "http.request", "body": chunk, "more_body": pending is not None}
        waiters = [asyncio.ensure_future(done.wait()), asyncio.ensure_future(gone.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if response.complete:
            raise RuntimeError(f"{kind} sent after the response completed")
        if kind == "http.response.start":
            if response.status:
                raise RuntimeError("http.response.start sent twice")
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif kind == "http.response.body":
            if not response.status:
                raise RuntimeError("http.response.body sent before http.response.start")
            response.body += message.get("body", b"")
            if not message.get("more_body", False):
                response.complete = True
                done.set()
        else:
            raise RuntimeError(f"unexpected message {kind}")

    await app(make_scope(method, path, headers), receive, send)
    return response
