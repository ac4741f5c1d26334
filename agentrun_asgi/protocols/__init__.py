"""The protocols the server speaks; each is a :class:`ProtocolHandler` plug-in."""

from .base import ProtocolHandler
from .openai import OpenAIProtocolHandler

__all__ = ["ProtocolHandler", "OpenAIProtocolHandler"]
