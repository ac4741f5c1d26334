"""Cross-cutting layers, each an ASGI app wrapping the next (Starlette middleware style).

``AgentRunServer`` composes them once, at construction; a feature that is off has no layer in
the chain, so it costs nothing per request. Outermost first, a request meets:
``RequestIdMiddleware`` -> ``CORSMiddleware`` -> ``APIKeyMiddleware`` -> ``RunGuard`` -> router.
"""

from __future__ import annotations

from .auth import APIKeyMiddleware, api_keys_from_env
from .cors import CORSMiddleware
from .guard import Lifecycle, Run, RunGuard
from .request_id import RequestIdFilter, RequestIdMiddleware, current_request_id

__all__ = [
    "APIKeyMiddleware",
    "CORSMiddleware",
    "Lifecycle",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "Run",
    "RunGuard",
    "api_keys_from_env",
    "current_request_id",
]
