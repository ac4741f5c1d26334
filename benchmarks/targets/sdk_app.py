"""The peer: the AgentRun SDK's own server (``agentrun-sdk[server]==0.0.54``), as users get it.

Runs in its own interpreter (``--sdk-python``). Routes: ``/openai/v1/chat/completions`` and
``/ag-ui/agent``. The SDK awaits a coroutine agent and iterates the async iterator it returns
(``AgentInvoker._call_handler`` then ``_iterate_async``), so it runs the same token generator
as every other target; its wire format is its own (``json.dumps`` with spaces, no usage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agentrun.server import AgentRunServer

from ..workload import answer


async def invoke_agent(request: Any) -> AsyncIterator[str]:
    return answer(request.messages[-1].content if request.messages else None)


app = AgentRunServer(invoke_agent=invoke_agent).app
