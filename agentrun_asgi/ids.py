"""Unique ids for responses, messages and requests, made without a syscall.

Ids must be unique, not secret: a random per-process prefix (made anew in a forked child, so
preloaded workers never share one) and a counter. Every id has 24 hex digits after its prefix,
the length the OpenAI ids (``chatcmpl-...``) and AG-UI message ids already had here.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id(prefix: str = "") -> str:
    """``prefix`` + 24 hex digits, unique within the process and, by its random part, across."""
    return f"{prefix}{_prefix}{next(_counter):012x}"


def new_request_id() -> bytes:
    """32 hex digits, the usual length of a request id (a uuid4's hex)."""
    return f"{_prefix}{next(_counter):020x}".encode("ascii")
