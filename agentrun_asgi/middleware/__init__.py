"""Cross-cutting layers, each an ASGI app wrapping the next (Starlette middleware style).

``AgentRunServer`` composes them once, at construction; a feature that is off has no layer in
the chain, so it costs nothing per request. Outermost first, a request meets:
``AccessLogMiddleware`` -> ``CORSMiddleware`` -> ``APIKeyMiddleware`` -> the dispatcher.
Request ids and the run guard are always on, so they are not layers (a layer costs a
coroutine per request): the server tags requests at its entry (``RequestIdMiddleware`` does
the same for hand-built stacks), and ``dispatch.Dispatcher`` guards the endpoint it calls.
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
