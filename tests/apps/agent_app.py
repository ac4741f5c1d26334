"""The app the ASGI-server tests serve in a subprocess: ``tests.apps.agent_app:app``.

It exercises every wire feature a server could break: streamed text (several sends), reasoning
and a tool call, over Chat Completions, AG-UI and the Responses API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentRunServer,
    AGUIProtocolHandler,
    EventType,
    OpenAIProtocolHandler,
)
from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

#: What the agent answers to ``hi``: the tests compare against it.
ANSWER = "Hello from agent_app: hi"


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    last = request.last_user_message
    text = last.text if last is not None else ""
    if text == "use a tool":
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_1", "name": "lookup",
                                                     "args_delta": '{"q": '})  # fmt: skip
        yield AgentEvent(EventType.TOOL_CALL_CHUNK,
                         {"id": "call_1", "args_delta": json.dumps("x") + "}"})  # fmt: skip
        return
    yield AgentEvent(EventType.REASONING, {"delta": "thinking"})
    for word in f"Hello from agent_app: {text}".split(" "):
        yield word if word == "Hello" else " " + word


app = AgentRunServer(
    invoke_agent,
    protocols=[OpenAIProtocolHandler(), AGUIProtocolHandler(), OpenAIResponsesProtocolHandler()],
)


async def endless_agent(request: AgentRequest) -> AsyncIterator[str]:
    """Streams until cancelled: what a stop of the server must not wait for."""
    while True:
        yield "tick "
        await asyncio.sleep(0.1)


#: ``tests.apps.agent_app:endless``: an endless stream, and a short grace to stop it in.
endless = AgentRunServer(endless_agent, shutdown_grace=0.5)


#: ``tests.apps.agent_app:logged``: the access log on, with nothing configuring logging.
logged = AgentRunServer(invoke_agent, access_log=True)
