r"""A streaming agent: an async generator that thinks, calls a tool, then answers word by word.

Serve it:   python examples/streaming.py                   (http://127.0.0.1:9000)
Try it:     curl -N http://127.0.0.1:9000/v1/chat/completions \
              -d '{"stream":true,"messages":[{"role":"user","content":"weather in Paris?"}]}'

Each yield goes out as its own chunk as soon as it is produced: a bare ``str`` is text,
``REASONING`` is ``delta.reasoning_content``, ``TOOL_CALL`` is a ``delta.tool_calls`` entry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType

#: Pause between words, so that streaming is visible in a terminal.
DELAY = 0.05


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    last = request.last_user_message
    question = last.text if last else ""
    yield AgentEvent(EventType.REASONING, {"delta": f"The user asks {question!r}. "})
    yield AgentEvent(EventType.REASONING, {"delta": "I should look up the weather."})
    yield AgentEvent(
        EventType.TOOL_CALL,
        {"id": "call_weather_1", "name": "get_weather", "args": json.dumps({"city": "Paris"})},
    )
    for word in "It is sunny in Paris today.".split(" "):
        yield word + " "
        await asyncio.sleep(DELAY)
    # Usage rides on the data of the last event; clients that ask for it get a usage chunk.
    yield AgentEvent(
        EventType.TEXT,
        {"delta": "", "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}},
    )


server = AgentRunServer(invoke_agent=invoke_agent)

if __name__ == "__main__":
    server.start(port=9000)
