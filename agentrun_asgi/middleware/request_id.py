"""Request ids: one per request, echoed as ``x-request-id`` and put into every log line.

An incoming ``X-Request-ID`` is kept when it looks like an id (1 to 128 characters of
``[A-Za-z0-9._-]``: nothing that could forge a log line or a header); otherwise a fresh one is
made. The id lives in a ``ContextVar`` for the request's task, which worker threads started
through anyio inherit, and ``RequestIdFilter`` reads it from there for each log record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from contextvars import ContextVar, Token

from ..ids import new_request_id
from ..requests import header
from ..types import ASGIApp, ASGIMessage, Receive, Scope, Send

_REQUEST_ID: ContextVar[str | None] = ContextVar("agentrun_request_id", default=None)
_valid = re.compile(rb"[A-Za-z0-9._-]{1,128}").fullmatch


def current_request_id() -> str | None:
    """The id of the request being served (in the agent too), or None outside a request."""
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` and, inside a request, prefixes the message with ``[<id>]``.

    Attached to the ``agentrun_asgi`` logger by the server; attach it to your own loggers or
    handlers to tag the agent's log lines too. A record is tagged once, however many filters
    it passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "request_id"):
            return True
        request_id = _REQUEST_ID.get()
        record.request_id = request_id or "-"
        if request_id is not None:
            # Safe inside a %-format string: the id has no "%" (see _valid).
            record.msg = f"[{request_id}] {record.msg}"
        return True


def install_log_filter(logger: logging.Logger | logging.Handler) -> None:
    """Add one ``RequestIdFilter`` to ``logger`` unless it has one."""
    if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
        logger.addFilter(RequestIdFilter())


def tag_request(scope: Scope, send: Send) -> tuple[Token[str | None], Send]:
    """Give the request its id: set it for logging, and return ``send`` adding the header.

    The returned ``send`` is a plain function handing back the server's own awaitable, so
    tagging adds no coroutine per message. Pass the token to :func:`untag_request` at the end.
    """
    raw = header(scope, b"x-request-id")
    if raw is None or _valid(raw) is None:
        raw = new_request_id()
    token = _REQUEST_ID.set(raw.decode("ascii"))
    pair = (b"x-request-id", raw)

    def send_with_id(message: ASGIMessage) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            # A new list: the endpoint's header list may be a shared constant.
            message["headers"] = [*message.get("headers", ()), pair]
        return send(message)

    return token, send_with_id


untag_request = _REQUEST_ID.reset


class RequestIdMiddleware:
    """Gives each request its id (see the module docstring), as a layer of its own.

    ``AgentRunServer`` does the same at its entry, with no layer; this class is for ASGI
    stacks assembled by hand.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token, send = tag_request(scope, send)
        try:
            await self.app(scope, receive, send)
        finally:
            untag_request(token)
