"""Request ids: one per request, echoed as ``x-request-id`` and put into every log line.

An incoming ``X-Request-ID`` is kept when it looks like an id (1 to 128 characters of
``[A-Za-z0-9._-]``: nothing that could forge a log line or a header); otherwise a fresh one is
made. The id lives in a ``ContextVar`` (``ids.request_id_header``) for the request's task, which
worker threads started through anyio inherit, and ``RequestIdFilter`` reads it from there for
each log record. The response helpers of ``responses.py`` put it into the heads they write;
:func:`with_request_id` adds it to any other head.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from contextvars import Token

from ..ids import new_request_id, request_id_header
from ..requests import Request, header
from ..types import ASGIApp, ASGIMessage, Endpoint, Receive, Scope, Send

#: Whether an incoming id may be kept (None: no): nothing that could forge a log line or a header.
valid_id = re.compile(rb"[A-Za-z0-9._-]{1,128}").fullmatch
_NAME = b"x-request-id"


def current_request_id() -> str | None:
    """The id of the request being served (in the agent too), or None outside a request."""
    tag = request_id_header.get()
    return None if tag is None else tag[1].decode("ascii")


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` and, inside a request, prefixes the message with ``[<id>]``.

    Attached to the ``agentrun_asgi`` logger by the server; attach it to your own loggers or
    handlers to tag the agent's log lines too. A record is tagged once, however many filters
    it passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "request_id"):
            return True
        request_id = current_request_id()
        record.request_id = request_id or "-"
        if request_id is not None:
            # Safe inside a %-format string: the id has no "%" (see valid_id).
            record.msg = f"[{request_id}] {record.msg}"
        return True


def install_log_filter(logger: logging.Logger | logging.Handler) -> None:
    """Add one ``RequestIdFilter`` to ``logger`` unless it has one."""
    if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
        logger.addFilter(RequestIdFilter())


def tag_request(scope: Scope) -> Token[tuple[bytes, bytes] | None]:
    """Give the request its id, for its log lines and its responses' heads.

    Pass the token to :func:`untag_request` at the end. (``Dispatcher`` does the same in line,
    reading the header in the pass it makes for Content-Length.)
    """
    raw = header(scope, _NAME)
    if raw is None or valid_id(raw) is None:
        raw = new_request_id()
    return request_id_header.set((_NAME, raw))


untag_request = request_id_header.reset


def with_request_id(send: Send) -> Send:
    """``send`` adding the request's id to a response head that has no ``x-request-id``
    (an endpoint's own one, say an upstream's it relays, is kept: one value, not two).

    A plain function handing back the server's own awaitable: no coroutine per message.
    """
    tag = request_id_header.get()
    if tag is None:
        return send

    def send_with_id(message: ASGIMessage) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            # ``tag in``: the helpers add this very tuple, found by identity with no scan.
            if tag not in headers and not any(name.lower() == _NAME for name, _ in headers):
                # A new list: the endpoint's header list may be a shared constant.
                message["headers"] = [*headers, tag]
        return send(message)

    return send_with_id


def tagging_endpoint(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` given a ``send`` that adds the id to its heads (for an unmarked endpoint)."""

    async def endpoint_with_id(request: Request, send: Send) -> None:
        await endpoint(request, with_request_id(send))

    return endpoint_with_id


class RequestIdMiddleware:
    """Gives each request its id (see the module docstring), as a layer of its own.

    ``AgentRunServer`` does the same with no layer when it can; this class is for ASGI stacks
    assembled by hand and for the server's own layers.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = tag_request(scope)
        try:
            await self.app(scope, receive, with_request_id(send))
        finally:
            untag_request(token)
