"""The access log: one structured line per HTTP request on the ``agentrun_asgi.access`` logger.

Off unless ``AgentRunServer(access_log=True)``. The line is written once the app is done with
the request (a stream: when it ended), as ``logger.info(message, extra=fields)``: the message
reads ``key=value`` for people, and the same fields are attributes of the record for a
structured (JSON) formatter: ``method``, ``path``, ``status``, ``duration_ms``,
``bytes_sent``, ``frames`` (SSE frames of a ``text/event-stream`` response, else None),
``request_id`` (from :func:`current_request_id`; ``-`` when request ids are off) and
``client`` (``host:port``). A client that left before any response began is logged with
status 499, as nginx does.

The path is the raw request target's path, still percent-encoded, so a crafted path cannot
break the line apart; the query string is left out (it may carry secrets). The client's host
is percent-encoded too when it is not a plain address: behind ``--proxy-headers`` it is the
``X-Forwarded-For`` value a client wrote, spaces and terminal escapes included.
"""

from __future__ import annotations

import logging
import re
from time import perf_counter
from urllib.parse import quote

from ..types import ASGIApp, ASGIMessage, Receive, Scope, Send
from .request_id import current_request_id

logger = logging.getLogger("agentrun_asgi.access")

_MESSAGE = (
    "method=%s path=%s status=%d duration_ms=%.1f bytes_sent=%d frames=%s request_id=%s client=%s"
)
_EVENT_STREAM = b"text/event-stream"
#: An IP address or a host name: safe in the line as is (anything else is percent-encoded).
_plain_host = re.compile(r"[0-9A-Za-z.:_\[\]-]*").fullmatch
#: The status of a request whose client left before any response began (nginx's "client
#: closed request"): it was answered nothing, least of all the 500 an error rate counts.
CLIENT_CLOSED = 499


class ReceiveWatch:
    """``receive``, remembering whether the client left: a request that ended with no response
    is then told apart from one whose app failed."""

    __slots__ = ("_receive", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = False

    async def __call__(self) -> ASGIMessage:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    def unanswered_status(self) -> int:
        """The status of a request no response began for: 499 if the client left first, else
        500 (the app failed, and the ASGI server answers with a 500)."""
        return CLIENT_CLOSED if self.disconnected else 500


def is_event_stream(message: ASGIMessage) -> bool:
    """Whether a ``http.response.start`` message opens a ``text/event-stream`` body."""
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bool(value[:17].lower() == _EVENT_STREAM)
    return False


def request_path(scope: Scope) -> str:
    """The path as the client sent it (percent-encoded: no spaces, no line breaks)."""
    raw: bytes | None = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1").partition("?")[0]
    return quote(scope["path"], safe="/:@!$&'()*+,;=-._~")


def client_text(scope: Scope) -> str:
    """``host:port``, the host percent-encoded unless plain: a forged ``X-Forwarded-For``
    must not add fields (``status=200``), break the line or reach a terminal as escapes."""
    client = scope.get("client")
    if not client:
        return "-"
    host = str(client[0])
    if _plain_host(host) is None:
        host = quote(host, safe=":[]")
    return f"{host}:{client[1]}"


class AccessLogMiddleware:
    """Writes the access line of every request it wraps (see the module docstring)."""

    __slots__ = ("app", "logger")

    def __init__(self, app: ASGIApp, logger: logging.Logger = logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status: int | None = None
        sent = 0
        frames: int | None = None
        watch = ReceiveWatch(receive)

        async def send_observed(message: ASGIMessage) -> None:
            nonlocal status, sent, frames
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                if frames is not None:
                    # Each SSE event ends with a blank line; encoders write whole frames.
                    frames += body.count(b"\n\n")
            elif kind == "http.response.start":
                # Recorded once it went out: a second head (the guard's 500 after an endpoint's
                # own 200) is refused by the server and must not rewrite what the client got.
                await send(message)
                status = message["status"]
                if is_event_stream(message):
                    frames = 0
                return
            await send(message)

        try:
            await self.app(scope, watch, send_observed)
        finally:
            if status is None:
                status = watch.unanswered_status()
            duration_ms = (perf_counter() - start) * 1000.0
            request_id = current_request_id()
            path = request_path(scope)
            client = client_text(scope)
            method = scope["method"]
            # ``request_id`` set on the record also tells RequestIdFilter not to prefix it.
            self.logger.info(
                _MESSAGE, method, path, status, duration_ms, sent,
                "-" if frames is None else frames, request_id or "-", client,
                extra={
                    "method": method, "path": path, "status": status,
                    "duration_ms": round(duration_ms, 3), "bytes_sent": sent,
                    "frames": frames, "request_id": request_id or "-", "client": client,
                },
            )  # fmt: skip
