"""The ASGI vocabulary every module speaks (ASGI 3.0 spec, "HTTP & WebSocket" and "Lifespan")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .requests import Request

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A protocol endpoint: gets the lazy request view and writes its own response to `send`.
Endpoint = Callable[["Request", Send], Awaitable[None]]

#: Raw header list as ASGI carries it: lower-case names, bytes both sides.
RawHeaders = list[tuple[bytes, bytes]]
