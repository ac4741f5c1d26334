"""The app the ASGI-server tests serve in a subprocess: ``tests.apps.agent_app:app``.

It exercises every wire feature a server could break: streamed text (several sends), reasoning
and a tool call, over Chat Completions, AG-UI and the Responses API.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import anyio

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


def mark(what: str) -> None:
    """Note ``what`` in the file named by ``$AGENTRUN_TEST_MARKS``, if set: how a test in
    another process sees what happened inside the server as it stopped."""
    path = os.environ.get("AGENTRUN_TEST_MARKS")
    if path:
        with open(path, "a") as marks:
            marks.write(what + "\n")


async def endless_agent(request: AgentRequest) -> AsyncIterator[str]:
    """Streams until cancelled (what a stop of the server must not wait for), or until the
    file named by ``$AGENTRUN_TEST_END`` exists. anyio's sleep: it runs under trio too."""
    end = os.environ.get("AGENTRUN_TEST_END")
    mark("started")
    try:
        while end is None or not os.path.exists(end):
            yield "tick "
            await anyio.sleep(0.1)
    finally:
        mark("closed")


#: ``tests.apps.agent_app:endless``: an endless stream, a short grace to stop it in, and a
#: shutdown hook that says it ran.
endless = AgentRunServer(endless_agent, shutdown_grace=0.5, on_shutdown=[lambda: mark("shutdown")])


#: ``tests.apps.agent_app:logged``: the access log on, with nothing configuring logging.
logged = AgentRunServer(invoke_agent, access_log=True)
