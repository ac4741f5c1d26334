"""Unique ids for responses, messages and requests: random, drawn from the OS in batches.

One ``os.urandom`` call gives the next 256 ids, cut from one hex string in C; an id is then
one ``list.pop()`` (formatting an integer per id, as a counter would need, costs several times
more, and so does slicing the string in a Python loop). Random 96 or 128 bits need no
coordination between processes; a forked child drops the batch it inherited, so preloaded
workers never hand out the same ids. Every id has 24 hex digits after its prefix, the length
the OpenAI ids (``chatcmpl-...``) and AG-UI message ids already had here; a request id has 32,
the usual length (a uuid4's hex).

The request being served keeps its id in a ``ContextVar`` (worker threads started through anyio
and tasks the agent starts inherit it) as the ready ``x-request-id`` header pair: the response
helpers append it to a head with no work, and log lines decode it when they need it.
"""

from __future__ import annotations

import os
import struct
from binascii import hexlify
from contextvars import ContextVar

_BATCH = 256
_cut_32 = struct.Struct("32s" * _BATCH).unpack  # one hex blob -> _BATCH ids, in C
_ids: list[str] = []
_request_ids: list[bytes] = []


def _forget() -> None:
    _ids.clear()
    _request_ids.clear()


os.register_at_fork(after_in_child=_forget)


#: The ``(b"x-request-id", id)`` header of the request being served; None outside one.
request_id_header: ContextVar[tuple[bytes, bytes] | None] = ContextVar(
    "agentrun_request_id", default=None
)


def new_id(prefix: str = "") -> str:
    """``prefix`` + 24 random hex digits."""
    try:
        return prefix + _ids.pop()
    except IndexError:
        # One hex string with a space every 12 bytes, split in C: no Python loop per id.
        _ids.extend(os.urandom(12 * _BATCH).hex(" ", 12).split())
        return prefix + _ids.pop()


def new_request_id() -> bytes:
    """32 random hex digits."""
    try:
        return _request_ids.pop()
    except IndexError:
        _request_ids.extend(_cut_32(hexlify(os.urandom(16 * _BATCH))))
        return _request_ids.pop()
