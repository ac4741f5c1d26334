"""Cross-cutting layers, each an ASGI app wrapping the next (Starlette middleware style).

``AgentRunServer`` composes them once, at construction; a feature that is off has no layer in
the chain, so it costs nothing per request. Outermost first, a request meets: the user's
``middleware`` -> ``AccessLogMiddleware`` -> ``MetricsMiddleware`` (in ``metrics.py``) ->
``CORSMiddleware`` -> ``APIKeyMiddleware`` -> the dispatcher. Request ids and the run guard
are always on, so they are not layers (a layer costs a coroutine per request): the server
tags requests at its entry, and ``dispatch.Dispatcher`` guards the endpoint it calls.
``RequestIdMiddleware`` is a layer only right inside the user's middleware (so that their
layers see the response's header) and in hand-built stacks.
"""

from __future__ import annotations

from .auth import APIKeyMiddleware, api_keys_from_env
from .cors import CORSMiddleware
from .request_id import RequestIdFilter, RequestIdMiddleware, current_request_id

__all__ = [
    "APIKeyMiddleware",
    "CORSMiddleware",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "api_keys_from_env",
    "current_request_id",
]
