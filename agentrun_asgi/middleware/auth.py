"""Optional API keys: ``Authorization: Bearer <key>`` (RFC 6750 section 2.1), as OpenAI's API.

Every configured key is compared, each with ``hmac.compare_digest``, so the time taken says
nothing about which key, or how much of one, matched. A refusal is a 401 with OpenAI's error
body (``code: "invalid_api_key"``) and ``WWW-Authenticate: Bearer`` (RFC 6750 section 3).
The health path stays open, for load balancers; CORS preflights never get here (the CORS layer
sits outside this one and answers them, as browsers send no credentials on a preflight).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import orjson

from ..requests import header, route_path
from ..responses import JSON_HEADERS, send_bytes
from ..types import ASGIApp, Receive, Scope, Send

ENV_VAR = "AGENTRUN_API_KEYS"


def _error_body(message: str) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None,
                   "code": "invalid_api_key"}}
    )  # fmt: skip


_MISSING = _error_body(
    "Missing API key: send it in the header 'Authorization: Bearer <key>'."
)
_INVALID = _error_body("Invalid API key.")
_MISSING_HEADERS = [(b"www-authenticate", b'Bearer realm="agentrun"')]
_INVALID_HEADERS = [(b"www-authenticate", b'Bearer realm="agentrun", error="invalid_token"')]


def api_keys_from_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The keys in ``AGENTRUN_API_KEYS`` (comma-separated; blanks dropped)."""
    return [key.strip() for key in environ.get(ENV_VAR, "").split(",") if key.strip()]


def _normalise(path: str) -> str:
    # The router's view of a path: empty segments (a trailing or doubled slash) dropped.
    return "/" + "/".join(s for s in path.split("/") if s)


class APIKeyMiddleware:
    """Refuses requests without one of ``keys``, except on ``open_paths``."""

    __slots__ = ("_compare", "app", "keys", "open_paths")

    def __init__(self, app: ASGIApp, keys: Sequence[str], open_paths: Iterable[str] = ()) -> None:
        if isinstance(keys, (str, bytes)):  # each character would be a key
            raise TypeError("APIKeyMiddleware takes a list of keys, not a single string")
        # The token is read without surrounding whitespace (a Bearer token has none, RFC 6750
        # 2.1), so a key kept with its own (``Path("key").read_text()``'s newline) could never
        # match: it is stripped, as the keys of ``AGENTRUN_API_KEYS`` are.
        stripped = [key.strip() for key in keys]
        if not stripped or not all(stripped):
            raise ValueError("APIKeyMiddleware needs at least one non-empty key")
        import hmac  # here, not at import: hashlib's OpenSSL load slows every server's start

        self._compare = hmac.compare_digest
        self.app = app
        self.keys = tuple(key.encode() for key in stripped)
        self.open_paths = frozenset(_normalise(p) for p in open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.open_paths and _normalise(route_path(scope)) in self.open_paths:
            await self.app(scope, receive, send)
            return
        value = header(scope, b"authorization")
        # The auth scheme is case-insensitive (RFC 9110 section 11.1).
        if value is None or value[:7].lower() != b"bearer ":
            await send_bytes(send, 401, _MISSING, JSON_HEADERS, _MISSING_HEADERS)
            return
        token = value[7:].strip()
        matched = False
        compare = self._compare
        for key in self.keys:
            matched |= compare(token, key)
        if matched:
            await self.app(scope, receive, send)
        else:
            await send_bytes(send, 401, _INVALID, JSON_HEADERS, _INVALID_HEADERS)
