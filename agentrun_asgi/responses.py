"""Writing responses to ``send``: whole JSON bodies, and the head of an event stream.

Header lists are byte pairs built once at import; a response only picks one and sends. Every
head these helpers write carries the request's ``x-request-id`` (see ``ids.py``), so an endpoint
that answers only through them is marked :func:`sends_request_id` and is given the server's own
``send``, with no wrapper to add the header.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from .errors import ProtocolError
from .ids import request_id_header
from .types import RawHeaders, Send

_request_id = request_id_header.get
_REQUEST_ID = b"x-request-id"
_E = TypeVar("_E")


def sends_request_id(endpoint: _E) -> _E:
    """Mark an endpoint whose response heads all go through these helpers.

    The mark is on the function: an override in a subclass does not inherit it, and is given a
    ``send`` that adds the header (unless a head already has it).
    """
    endpoint.sends_request_id = True  # type: ignore[attr-defined]
    return endpoint


JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]
# Per the WHATWG SSE spec the type is text/event-stream; no-cache and X-Accel-Buffering stop
# proxies (nginx) from holding frames back.
SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def send_bytes(
    send: Send, status: int, body: bytes, headers: RawHeaders, extra: RawHeaders | None = None
) -> None:
    """One whole response with a Content-Length; an ``x-request-id`` in ``extra`` replaces the
    request's own."""
    raw = [*headers, (b"content-length", str(len(body)).encode())]
    tag = _request_id()
    if extra:
        raw.extend(extra)
        if tag is not None and _has_request_id(extra):
            tag = None
    if tag is not None:
        raw.append(tag)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, content: Any, extra_headers: RawHeaders | None = None
) -> None:
    await send_bytes(send, status, orjson.dumps(content), JSON_HEADERS, extra_headers)


async def send_error(send: Send, error: ProtocolError) -> None:
    await send_json(send, error.status, error.body(), error.headers)


async def start_event_stream(send: Send, extra_headers: RawHeaders | None = None) -> None:
    """Open a 200 ``text/event-stream`` response; the body follows in chunks.

    A header of ``extra_headers`` replaces the default of the same name, so a protocol of one's
    own can stream another type (``application/x-ndjson``) without sending two; an
    ``x-request-id`` there replaces the request's own.
    """
    tag = _request_id()
    if extra_headers:
        names = {name.lower() for name, _ in extra_headers}
        headers = [*(h for h in SSE_HEADERS if h[0] not in names), *extra_headers]
        if _REQUEST_ID in names:
            tag = None
    else:
        headers = SSE_HEADERS
    if tag is not None:
        headers = [*headers, tag]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


def _has_request_id(headers: RawHeaders) -> bool:
    return any(name.lower() == _REQUEST_ID for name, _ in headers)
