"""The protocols the server speaks; each is a :class:`ProtocolHandler` plug-in."""

from .agui import AGUIProtocolHandler
from .base import ProtocolHandler
from .openai import OpenAIProtocolHandler
from .responses import OpenAIResponsesProtocolHandler

__all__ = [
    "AGUIProtocolHandler",
    "OpenAIProtocolHandler",
    "OpenAIResponsesProtocolHandler",
    "ProtocolHandler",
]
