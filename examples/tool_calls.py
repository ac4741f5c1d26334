r"""An agent that streams a tool call piece by piece, then answers from the tool's result.

Serve it:   python examples/tool_calls.py                  (http://127.0.0.1:9000)
Try it:     curl -N http://127.0.0.1:9000/v1/chat/completions -d '{"stream":true,
              "messages":[{"role":"user","content":"weather in Paris?"}]}'

Turn 1: the client offers tools; the agent streams ``get_weather`` with ``TOOL_CALL_CHUNK``
events (the first chunk of an id names the tool, the rest carry argument fragments), exactly as
an LLM streams one. OpenAI clients see ``delta.tool_calls`` fragments and ``finish_reason:
"tool_calls"``; AG-UI clients see ``TOOL_CALL_START`` / ``TOOL_CALL_ARGS`` / ``TOOL_CALL_END``.
Turn 2: the client runs the tool and sends its result back as a ``tool`` message; the agent
answers with text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType, MessageRole

#: Pause between argument fragments, so that streaming is visible in a terminal.
DELAY = 0.02


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role is MessageRole.TOOL:
        yield f"The tool says: {last.text}"
        return
    question = last.text if last is not None else ""
    city = "Paris" if "paris" in question.lower() else "London"
    call_id = "call_weather_1"
    arguments = json.dumps({"city": city, "unit": "celsius"})
    # Split the JSON anywhere, as a model's token stream would: only the whole must parse.
    pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
    for i, piece in enumerate(pieces):
        data = {"id": call_id, "args_delta": piece}
        if i == 0:
            data["name"] = "get_weather"
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, data)
        await asyncio.sleep(DELAY)


server = AgentRunServer(invoke_agent=invoke_agent)

if __name__ == "__main__":
    server.start(host="127.0.0.1", port=9000)
