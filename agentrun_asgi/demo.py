"""The built-in demo agent: one request shows reasoning, a tool call and streamed text."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import orjson

from .models import AgentEvent, AgentRequest, EventType

#: Seconds between streamed pieces, so that streaming is visible in a terminal.
DELAY = float(os.environ.get("AGENTRUN_DEMO_DELAY", "0.02"))


async def demo_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    """Think, call a clock tool, then answer word by word."""
    last = request.last_user_message
    question = last.text if last is not None else ""
    for piece in ("The user wrote ", f"{len(question)} characters. ", "I will check the time."):
        yield AgentEvent(EventType.REASONING, {"delta": piece})
        await asyncio.sleep(DELAY)
    call_id = "call_demo_clock"
    yield AgentEvent(
        EventType.TOOL_CALL,
        {"id": call_id, "name": "get_time", "args": orjson.dumps({"timezone": "UTC"}).decode()},
    )
    now = datetime.now(timezone.utc).strftime("%H:%M UTC")
    yield AgentEvent(EventType.TOOL_RESULT, {"id": call_id, "result": now})
    answer = f"Hello! You said: {question!r}. It is {now}." if question else f"Hello! It is {now}."
    words = answer.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "
        await asyncio.sleep(DELAY)
