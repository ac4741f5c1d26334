"""CORS (WHATWG Fetch standard, "CORS protocol"), off unless origins are configured.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
here, on any path, before authentication: browsers send no credentials on a preflight. An
actual request from an allowed origin gets ``Access-Control-Allow-Origin`` (and ``Vary:
Origin``) on its response head, streams included. An origin not on the list gets no CORS
header at all, so the browser keeps the response from the page. Every response carries ``Vary:
Origin``, with no ``Origin`` too (Fetch, "CORS protocol and HTTP caches"). Credentialed requests
(cookies) are not supported: an API key in ``Authorization`` needs no credentials mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import ProtocolError
from ..requests import header
from ..responses import send_error
from ..types import ASGIApp, ASGIMessage, Receive, Scope, Send

# A comma-separated list of header names (RFC 9110 "token" characters): safe to echo back.
_header_list = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~, -]*").fullmatch
#: Always granted (Fetch's CORS-safelisted request-header names, as Starlette grants them): a
#: JSON POST's ``Content-Type: application/json`` is not a safelisted value, so the browser
#: asks for ``content-type`` in its preflight, and a list without it would refuse every call.
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})


class CORSMiddleware:
    """Answers preflights and marks actual responses for ``origins`` (``"*"`` for any)."""

    __slots__ = (
        "_actual_headers",
        "_preflight_headers",
        "_vary",
        "allow_headers",
        "any_origin",
        "app",
        "origins",
    )  # fmt: skip

    def __init__(
        self,
        app: ASGIApp,
        origins: Sequence[str],
        *,
        methods: Sequence[str] = ("GET", "POST"),
        allow_headers: Sequence[str] | None = None,
        expose_headers: Sequence[str] = (),
        max_age: int = 600,
    ) -> None:
        self.app = app
        # Browsers send an origin serialized in lower case (scheme and host are case-insensitive):
        # a list written "https://App.Example.com" must still match it.
        cleaned = [o.strip().rstrip("/").lower() for o in origins if o.strip()]
        self.any_origin = "*" in cleaned
        self.origins = frozenset(o.encode("latin-1") for o in cleaned if o != "*")
        #: None: any header the browser asks for is allowed (the official OpenAI JS client
        #: sends a dozen ``x-stainless-*`` headers).
        self.allow_headers = (
            None
            if allow_headers is None
            else SAFELISTED_HEADERS | {h.lower() for h in allow_headers}
        )
        allowed_methods = sorted({m.upper() for m in methods} | {"OPTIONS"})
        self._vary = (b"vary", b"Origin")
        self._preflight_headers = [
            (b"access-control-allow-methods", ", ".join(allowed_methods).encode()),
            (b"access-control-max-age", str(int(max_age)).encode()),
            self._vary,
        ]
        self._actual_headers = [self._vary]
        if expose_headers:
            self._actual_headers.append(
                (b"access-control-expose-headers", ", ".join(expose_headers).encode("latin-1"))
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin")
        # Without an allowed Origin no CORS header, but ``Vary: Origin`` all the same: the
        # answer depends on it, and a cache that kept this one must not give it to a page.
        extra = [self._vary]
        if origin is not None:
            allowed = self.any_origin or origin in self.origins
            if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"):
                await self._preflight(scope, origin, allowed, send)
                return
            if allowed:
                extra = [(b"access-control-allow-origin", b"*" if self.any_origin else origin),
                         *self._actual_headers]  # fmt: skip

        async def send_with_cors(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, origin: bytes, allowed: bool, send: Send) -> None:
        if not allowed:
            error = ProtocolError(
                403, "This origin is not allowed to call the API (CORS).",
                code="cors_origin_not_allowed", headers=[self._vary],
            )  # fmt: skip
            await send_error(send, error)
            return
        headers = [(b"access-control-allow-origin", b"*" if self.any_origin else origin),
                   *self._preflight_headers]  # fmt: skip
        requested = header(scope, b"access-control-request-headers")
        if requested and _header_list(requested):
            if self.allow_headers is None:
                headers.append((b"access-control-allow-headers", requested))
            else:
                names = [n.strip() for n in requested.decode("latin-1").lower().split(",")]
                granted = [n for n in names if n in self.allow_headers]
                if granted:
                    headers.append((b"access-control-allow-headers", ", ".join(granted).encode()))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
