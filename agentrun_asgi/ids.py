"""Unique ids for responses, messages and requests, made without a syscall.

Ids must be unique, not secret: a random per-process base (made anew in a forked child, so
preloaded workers never share one) plus a counter, formatted with one ``%`` operation (a
format-spec f-string costs about twice as much, and a request makes two ids). Every id has
24 hex digits after its prefix, the length the OpenAI ids (``chatcmpl-...``) and AG-UI message
ids already had here; a request id has 32, the usual length (a uuid4's hex).

The request being served keeps its id in a ``ContextVar`` (worker threads started through anyio
and tasks the agent starts inherit it) as the ready ``x-request-id`` header pair: the response
helpers append it to a head with no work, and log lines decode it when they need it.
"""

from __future__ import annotations

import itertools
import os
from contextvars import ContextVar

_next = itertools.count(1).__next__
#: Random high bits; the counter fills the low ones (2**48 and 2**64 ids before they meet).
_base = 0
_request_base = 0


def _reseed() -> None:
    global _next, _base, _request_base
    _next = itertools.count(1).__next__
    _base = int.from_bytes(os.urandom(6), "big") << 48
    _request_base = int.from_bytes(os.urandom(8), "big") << 64


_reseed()
os.register_at_fork(after_in_child=_reseed)


#: The ``(b"x-request-id", id)`` header of the request being served; None outside one.
request_id_header: ContextVar[tuple[bytes, bytes] | None] = ContextVar(
    "agentrun_request_id", default=None
)


def new_id(prefix: str = "") -> str:
    """``prefix`` + 24 hex digits, unique within the process and, by its random part, across."""
    return prefix + "%024x" % (_base + _next())


def new_request_id() -> bytes:
    """32 hex digits."""
    return b"%032x" % (_request_base + _next())
