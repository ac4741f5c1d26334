"""The base every protocol builds on; a new protocol needs no change to the server."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, ClassVar

from ..invoker import Invoker, StreamItem
from ..models import AgentRequest
from ..routing import Route

if TYPE_CHECKING:
    from ..server import AgentRunServer


class ProtocolHandler:
    """A protocol: a set of routes under one prefix, and the agent to call.

    Subclasses implement :meth:`routes`; endpoints are ``async def endpoint(request, send)``
    over the lazy :class:`~agentrun_asgi.requests.Request` view, writing their own response
    (see ``responses.py`` and ``streaming.py`` for the helpers the built-in protocols use).
    The prefix is, in order: the server's ``prefix_overrides[type(handler).__name__]``, else
    :meth:`get_prefix`, else ``/`` + the class name without ``ProtocolHandler``, lower-cased.
    """

    #: The value of ``AgentRequest.protocol`` for requests this handler builds.
    name: ClassVar[str] = "custom"

    invoker: Invoker

    def get_prefix(self) -> str | None:
        return None

    def default_prefix(self) -> str:
        name = type(self).__name__
        if name.endswith("ProtocolHandler"):
            name = name[: -len("ProtocolHandler")]
        return "/" + name.lower()

    def bind(self, server: AgentRunServer) -> None:
        """Called once by the server that serves this handler, before :meth:`routes`.

        A handler already bound to one server and passed to another is copied (``copy.copy``)
        for the second, so that each runs its own agent.
        """
        self.invoker = server.invoker

    def routes(self) -> Sequence[Route]:
        """The routes of this protocol, with paths relative to its prefix."""
        raise NotImplementedError(f"{type(self).__name__} must implement routes()")

    def invoke(self, request: AgentRequest) -> AsyncGenerator[StreamItem, None]:
        """Run the agent: an async stream of ``str`` (text) and ``AgentEvent`` items."""
        return self.invoker.stream(request)
