"""agentrun-asgi serving the shared workload: OpenAI at ``/v1``, AG-UI at ``/ag-ui/agent``.

AG-UI is added only when the package has its handler (``HAS_AGUI``); the runner probes the
route and skips the AG-UI row with a line when it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agentrun_asgi import AgentRequest, AgentRunServer, OpenAIProtocolHandler

from ..workload import answer

try:
    from agentrun_asgi import AGUIProtocolHandler  # type: ignore[attr-defined]
except ImportError:
    try:
        from agentrun_asgi.protocols.agui import AGUIProtocolHandler  # type: ignore[no-redef]
    except ImportError:
        AGUIProtocolHandler = None  # type: ignore[assignment,misc]

HAS_AGUI = AGUIProtocolHandler is not None


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    """Hand back the shared token generator; the server iterates it (no extra layer)."""
    return answer(request.messages[-1].content if request.messages else None)


def build() -> Any:
    protocols: list[Any] = [OpenAIProtocolHandler()]
    if HAS_AGUI:
        protocols.append(AGUIProtocolHandler())
    return AgentRunServer(invoke_agent, protocols=protocols)


app = build()
