r"""An agent that is a thin layer over a real OpenAI-compatible backend, streamed through.

Serve it:   OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... \
              OPENAI_MODEL=gpt-4o-mini python examples/openai_backend.py
Try it:     curl -N http://127.0.0.1:9000/v1/chat/completions -d '{"stream":true,
              "messages":[{"role":"user","content":"hi"}]}'

The backend is called with ``AsyncOpenAI(...).chat.completions.create(stream=True)``; each chunk
is re-yielded as it arrives: ``delta.content`` as text, ``delta.reasoning_content`` (what
reasoning backends such as vLLM or DeepSeek send) as ``REASONING``, ``delta.tool_calls``
fragments as ``TOOL_CALL_CHUNK`` (the backend names a call's id only in its first fragment, so
later ones are matched by ``index``), and the final usage. So the same backend now also speaks
AG-UI (and the Responses API, where that protocol is served).

The backend client lives as long as the server: it is opened and closed by ``lifespan``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from openai import NOT_GIVEN, AsyncOpenAI

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType, Message

_backend: dict[str, AsyncOpenAI] = {}


@asynccontextmanager
async def lifespan(server: AgentRunServer) -> AsyncIterator[None]:
    client = AsyncOpenAI(
        base_url=os.environ.get("OPENAI_BASE_URL"),  # None: the client's own default
        api_key=os.environ.get("OPENAI_API_KEY", "unused"),
    )
    _backend["client"] = client
    try:
        yield
    finally:
        _backend.pop("client", None)
        await client.close()


def to_openai(message: Message) -> dict[str, Any]:
    """One ``Message`` back in the Chat Completions shape the backend expects."""
    out: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    client = _backend.get("client")
    if client is None:
        raise RuntimeError("the backend client is not open: serve with the server's lifespan")
    tools: Any = NOT_GIVEN
    if request.tools:
        tools = [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.parameters or {"type": "object"}}}
            for t in request.tools
        ]  # fmt: skip
    messages: Any = [to_openai(m) for m in request.messages]
    temperature: Any = request.temperature if request.temperature is not None else NOT_GIVEN
    stream = await client.chat.completions.create(
        model=os.environ.get("OPENAI_MODEL") or request.model or "gpt-4o-mini",
        messages=messages,
        tools=tools,
        temperature=temperature,
        stream=True,
        stream_options={"include_usage": True},
    )
    call_ids: dict[int, str] = {}
    async with stream:  # closes the backend stream when our client goes away
        async for chunk in stream:
            if chunk.usage is not None:
                yield AgentEvent(EventType.TEXT, {"delta": "", "usage": chunk.usage.model_dump(
                    include={"prompt_tokens", "completion_tokens", "total_tokens"})})
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            reasoning = (delta.model_extra or {}).get("reasoning_content")
            if reasoning:
                yield AgentEvent(EventType.REASONING, {"delta": reasoning})
            if delta.content:
                yield delta.content
            for call in delta.tool_calls or ():
                if call.id:
                    call_ids[call.index] = call.id
                data: dict[str, Any] = {
                    "id": call_ids.get(call.index, f"call_{call.index}"),
                    "args_delta": (call.function.arguments if call.function else None) or "",
                }
                if call.function is not None and call.function.name:
                    data["name"] = call.function.name
                yield AgentEvent(EventType.TOOL_CALL_CHUNK, data)


server = AgentRunServer(invoke_agent=invoke_agent, lifespan=lifespan)

if __name__ == "__main__":
    server.start(host="127.0.0.1", port=9000)
