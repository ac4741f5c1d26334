"""agentrun-asgi: put an agent function behind OpenAI-compatible and AG-UI HTTP, on pure ASGI.

``app`` (for ``uvicorn agentrun_asgi:app``) is built on first access, so importing the package
stays cheap and imports no web framework, no ASGI server and no pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ProtocolError
from .invoker import Invoker
from .middleware.request_id import current_request_id
from .models import (
    AgentEvent,
    AgentRequest,
    AgentResponse,
    AgentResult,
    EventType,
    Message,
    MessageRole,
    Tool,
    ToolCall,
)
from .playground import PlaygroundHandler
from .protocols import (
    AGUIProtocolHandler,
    OpenAIProtocolHandler,
    OpenAIResponsesProtocolHandler,
    ProtocolHandler,
)
from .requests import Request
from .routing import Route
from .server import AgentRunServer

__version__ = "0.1.0"

if TYPE_CHECKING:
    app: AgentRunServer  # made by __getattr__ below; declared so type checkers see its type

__all__ = [
    "AGUIProtocolHandler",
    "AgentEvent",
    "AgentRequest",
    "AgentResponse",
    "AgentResult",
    "AgentRunServer",
    "EventType",
    "Invoker",
    "Message",
    "MessageRole",
    "OpenAIProtocolHandler",
    "OpenAIResponsesProtocolHandler",
    "PlaygroundHandler",
    "ProtocolError",
    "ProtocolHandler",
    "Request",
    "Route",
    "Tool",
    "ToolCall",
    "app",
    "current_request_id",
]


def __getattr__(name: str) -> Any:
    if name == "app":
        from .loader import default_app

        app = default_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'agentrun_asgi' has no attribute {name!r}")
