"""The official ``openai`` Python client against a real uvicorn: what users actually run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
import tool_call_shapes
from pydantic import BaseModel

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentResponse,
    AgentRunServer,
    EventType,
    OpenAIProtocolHandler,
    ToolCall,
)
from agentrun_asgi.protocols.openai import ChatCompletionCollector, ChatStreamEncoder

USER = [{"role": "user", "content": "hi"}]


class Weather(BaseModel):
    """The arguments of a strict tool, for the client's parsing helpers."""

    city: str


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=10)


def _tool_call(call_id: str, name: str, args: dict[str, Any]) -> AgentEvent:
    return AgentEvent(EventType.TOOL_CALL, {"id": call_id, "name": name, "args": json.dumps(args)})


# -- plain text ------------------------------------------------------------------------------


def test_non_stream_text(serve: Any) -> None:
    def agent(request: AgentRequest) -> str:
        return "Hello, " + request.messages[-1].text

    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(model="my-model", messages=USER)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "my-model"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello, hi"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None


def test_stream_text(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        for word in ("one ", "two ", "three"):
            yield word

    with serve(AgentRunServer(agent)) as base:
        chunks = list(
            client(base).chat.completions.create(model="m1", messages=USER, stream=True)
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"m1"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == "one "
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    # No include_usage: no usage anywhere.
    assert all(c.usage is None for c in chunks)


def test_model_defaults_when_omitted(serve: Any) -> None:
    seen: list[str | None] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request.model)
        return "ok"

    with serve(AgentRunServer(agent)) as base:
        r = httpx.post(base + "/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 200
    assert r.json()["model"] == "agentrun"
    assert seen == ["agentrun"]


def test_async_client_stream_and_non_stream(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        yield "async "
        yield "client"

    async def run(base: str) -> tuple[str, str]:
        aclient = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        async with aclient:
            whole = await aclient.chat.completions.create(model="m", messages=USER)
            stream = await aclient.chat.completions.create(model="m", messages=USER, stream=True)
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return whole.choices[0].message.content or "", "".join(parts)

    with serve(AgentRunServer(agent)) as base:
        whole, streamed = asyncio.run(run(base))
    assert whole == streamed == "async client"


# -- tool calls --------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_stream_tool_call_chunks_accumulated_by_client_helper(serve: Any) -> None:
    """TOOL_CALL_CHUNK fragments reach the client's own accumulator as one call."""
    seen_tools: list[Any] = []

    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        seen_tools.append(request.tools)
        yield AgentEvent(EventType.TOOL_CALL_CHUNK,
                         {"id": "call_1", "name": "get_weather", "args_delta": '{"ci'})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_1", "args_delta": 'ty": "Pa'})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_1", "args_delta": 'ris"}'})

    with serve(AgentRunServer(agent)) as base:
        with client(base).chat.completions.stream(
            model="m", messages=USER, tools=TOOLS  # type: ignore[arg-type]
        ) as stream:
            done_events = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
            final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.role == "assistant"
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.id == "call_1"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert [e.name for e in done_events] == ["get_weather"]
    tools = seen_tools[0]
    assert tools is not None and tools[0].name == "get_weather"
    assert tools[0].parameters["properties"]["city"] == {"type": "string"}


def test_stream_tool_call_name_in_a_later_chunk(serve: Any) -> None:
    """A call whose first TOOL_CALL_CHUNK has no name gets it from a later chunk, streamed or
    not: the stream sends the name in the fragment that brings it."""

    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_1", "args_delta": '{"city":'})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK,
                         {"id": "call_1", "name": "Weather", "args_delta": '"Oslo"}'})

    tools = [openai.pydantic_function_tool(Weather)]
    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        with oai.chat.completions.stream(model="m", messages=USER, tools=tools) as stream:
            done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
            streamed = stream.get_final_completion().choices[0].message.tool_calls or []
        whole = oai.chat.completions.create(model="m", messages=USER).choices[0].message
    assert [(e.name, e.parsed_arguments) for e in done] == [("Weather", Weather(city="Oslo"))]
    assert [(c.id, c.function.name, c.function.parsed_arguments) for c in streamed] == [
        ("call_1", "Weather", Weather(city="Oslo"))]
    assert [(c.id, c.function.name) for c in whole.tool_calls or []] == [("call_1", "Weather")]


def test_stream_two_tool_calls_indexed(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        yield "Checking two cities."
        yield _tool_call("call_a", "get_weather", {"city": "Oslo"})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK,
                         {"id": "call_b", "name": "get_weather", "args_delta": '{"city":'})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": '"Rome"}'})

    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
        with oai.chat.completions.stream(model="m", messages=USER) as stream:
            final = stream.get_final_completion()
    indexes = [tc.index for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert sorted(set(indexes)) == [0, 1]
    starts = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if tc.id]
    assert [(tc.index, tc.id, tc.type) for tc in starts] == [
        (0, "call_a", "function"), (1, "call_b", "function")
    ]
    message = final.choices[0].message
    assert message.content == "Checking two cities."
    calls = message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Oslo"}),
        ("call_b", "get_weather", {"city": "Rome"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_opening_with_tool_call_has_role(serve: Any) -> None:
    def agent(request: AgentRequest) -> list[AgentEvent]:
        return [_tool_call("call_x", "f", {})]

    with serve(AgentRunServer(agent)) as base:
        chunks = list(client(base).chat.completions.create(model="m", messages=USER, stream=True))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.tool_calls is not None and first.tool_calls[0].id == "call_x"


def test_non_stream_tool_calls(serve: Any) -> None:
    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(
            tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),
                        ToolCall("call_2", "get_time", "{}")]
        )

    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(model="m", messages=USER)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert [(c.id, c.type, c.function.name, c.function.arguments)
            for c in message.tool_calls or []] == [
        ("call_1", "function", "get_weather", '{"city":"Oslo"}'),
        ("call_2", "function", "get_time", "{}"),
    ]


class GetTime(BaseModel):
    """A tool with no parameters."""


def test_tool_call_without_arguments_sends_an_empty_object(serve: Any) -> None:
    """``ToolCall(id, name)`` (no arguments) is ``"{}"`` on the wire, as OpenAI sends for a
    call with no parameters: ``json.loads`` and the client's parsing helpers read it ("" broke
    both)."""

    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(tool_calls=[ToolCall("call_1", "GetTime")])

    tools = [openai.pydantic_function_tool(GetTime)]
    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        whole = oai.chat.completions.parse(model="m", messages=USER, tools=tools)
        with oai.chat.completions.stream(model="m", messages=USER, tools=tools) as stream:
            streamed = stream.get_final_completion()
    for completion in (whole, streamed):
        calls = completion.choices[0].message.tool_calls or []
        assert [(c.function.name, c.function.arguments, c.function.parsed_arguments)
                for c in calls] == [("GetTime", "{}", GetTime())]  # fmt: skip


def test_non_stream_tool_call_chunks_merged(serve: Any) -> None:
    def agent(request: AgentRequest) -> Iterator[AgentEvent]:
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "c1", "name": "f", "args_delta": '{"a"'})
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "c1", "args_delta": ": 1}"})

    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(model="m", messages=USER)
    calls = completion.choices[0].message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.name == "f"
    assert json.loads(calls[0].function.arguments) == {"a": 1}


@pytest.mark.parametrize("shape", list(tool_call_shapes.SHAPES))
def test_tool_call_chunk_without_id_continues_the_last_call(serve: Any, shape: str) -> None:
    """The id rule of TOOL_CALL_CHUNK (see tool_call_shapes), the same in the raw stream, the
    client's stream helper and the JSON form."""

    def agent(request: AgentRequest) -> list[AgentEvent]:
        return tool_call_shapes.events(shape)

    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
        with oai.chat.completions.stream(model="m", messages=USER) as stream:
            helper = stream.get_final_completion().choices[0].message.tool_calls or []
        whole = oai.chat.completions.create(model="m", messages=USER).choices[0].message
    raw: dict[int, list[str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = raw.setdefault(delta.index, ["", "", ""])
            if delta.id:
                assert not call[0], "one id per call"
                call[0] = delta.id
            if delta.function is not None:
                call[1] += delta.function.name or ""
                call[2] += delta.function.arguments or ""
    assert sorted(raw) == list(range(len(raw)))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    tool_call_shapes.check([(i, n, a) for i, n, a in raw.values()], shape)
    for message in (helper, whole.tool_calls or []):
        tool_call_shapes.check([(c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
                                for c in message], shape)  # fmt: skip


def calls_both_ways(items: list[Any]) -> tuple[list[tuple[str, str, str]], ...]:
    """The tool calls (id, name, arguments) of ``items``, streamed (merged by index, as the
    clients do) and collected into the JSON form."""
    encoder = ChatStreamEncoder("chatcmpl-x", 0, "m", False)
    body = b"".join(encoder.encode(item) for item in items) + encoder.close()
    streamed: dict[int, list[str]] = {}
    for frame in body.split(b"\n\n")[:-2]:  # the last is [DONE]
        for delta in json.loads(frame[6:])["choices"][0]["delta"].get("tool_calls", ()):
            call = streamed.setdefault(delta["index"], ["", "", ""])
            call[0] += delta.get("id", "")
            call[1] += delta.get("function", {}).get("name", "")
            call[2] += delta.get("function", {}).get("arguments", "")
    collector = ChatCompletionCollector()
    collector.add_all(items)
    collected = [(c["id"], c["function"]["name"], c["function"]["arguments"])
                 for c in collector.body("x", 0, "m")["choices"][0]["message"]["tool_calls"]]
    return [(i, n, a) for i, n, a in streamed.values()], collected


def test_encoder_and_collector_continue_the_last_call_across_text() -> None:
    """An id-less chunk after text still continues the last call; a whole call without an id is
    a new call, and a chunk after it continues that one. Stream and collector agree."""
    E, T = AgentEvent, EventType
    items: list[Any] = [
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "f", "args_delta": '{"x":'}),
        "between",
        E(T.TOOL_CALL_CHUNK, {"args_delta": "1}"}),
        E(T.TOOL_CALL, {"name": "g"}),
        E(T.TOOL_CALL_CHUNK, {"id": None, "args_delta": ""}),
    ]
    for calls in calls_both_ways(items):
        assert [(name, args) for _, name, args in calls] == [("f", '{"x":1}'), ("g", "{}")]
        assert calls[0][0] == "call_a" and calls[1][0].startswith("call_")


def test_null_arguments_are_no_arguments() -> None:
    """``args``/``args_delta`` of None (OpenAI's deltas send ``"arguments": null``) add no
    ``null`` text: a whole call without arguments is "{}", streamed or not, from an
    ``AgentResponse`` too."""
    E, T = AgentEvent, EventType
    items: list[Any] = [
        E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": None}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "g", "args_delta": None}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": '{"x":1}'}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": None}),
        *AgentResponse(tool_calls=[{"id": "call_c", "function": {"name": "h", "arguments": None}}]
                       ).to_events(),
    ]  # fmt: skip
    want = [("call_a", "f", "{}"), ("call_b", "g", '{"x":1}'), ("call_c", "h", "{}")]
    streamed, collected = calls_both_ways(items)
    assert streamed == collected == want


# -- usage, reasoning, models ------------------------------------------------------------------

USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_stream_include_usage(serve: Any) -> None:
    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(content="counted", usage=USAGE)

    with serve(AgentRunServer(agent)) as base:
        chunks = list(client(base).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        ))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        3, 5, 8
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert all(len(c.choices) == 1 for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "counted"


def test_stream_include_usage_raw_nulls(serve: Any) -> None:
    """Every chunk but the usage one carries an explicit ``"usage": null``."""

    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        yield "a"
        yield AgentEvent(EventType.TEXT, {"delta": "b", "usage": USAGE})

    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    with serve(AgentRunServer(agent)) as base:
        r = httpx.post(base + "/v1/chat/completions", json=body)
    frames = [f[len("data: "):] for f in r.text.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all("usage" in c for c in chunks)
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE


def test_non_stream_usage_from_agent(serve: Any) -> None:
    def agent(request: AgentRequest) -> dict[str, Any]:
        return {"content": "x", "usage": USAGE}

    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(model="m", messages=USER)
    assert completion.usage is not None and completion.usage.total_tokens == 8


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 3, "completion_tokens": 5}, {"input_tokens": 3, "output_tokens": 5},
     {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": None}],
)  # fmt: skip
def test_usage_completed_to_the_chat_shape(serve: Any, usage: dict[str, Any]) -> None:
    """Usage without a total, or in the Responses shape (which that endpoint takes), still has
    the three counts the client types as ints, streamed (include_usage) or not."""

    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(content="counted", usage=usage)

    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        whole = oai.chat.completions.create(model="m", messages=USER).usage
        with oai.chat.completions.stream(
            model="m", messages=USER, stream_options={"include_usage": True}
        ) as stream:
            streamed = stream.get_final_completion().usage
    for counted in (whole, streamed):
        assert counted is not None
        assert (counted.prompt_tokens, counted.completion_tokens, counted.total_tokens) == (
            3, 5, 8)


def test_models_list(serve: Any) -> None:
    with serve(AgentRunServer(lambda r: "x")) as base:
        models = list(client(base).models.list())
    assert [m.id for m in models] == ["agentrun"]
    assert models[0].object == "model"
    assert models[0].owned_by == "agentrun"
    assert isinstance(models[0].created, int)


def test_models_retrieve(serve: Any) -> None:
    models = ["agentrun", "agentrun-mini", "team/bot"]
    handler = OpenAIProtocolHandler(models=models, owned_by="team")
    with serve(AgentRunServer(lambda r: "x", protocols=[handler])) as base:
        oai = client(base)
        listed = list(oai.models.list())
        mini = oai.models.retrieve("agentrun-mini")
        slashed = oai.models.retrieve("team/bot")  # sent as team%2Fbot
        with pytest.raises(openai.NotFoundError) as missing:
            oai.models.retrieve("gpt-nonexistent")
    assert mini.id == "agentrun-mini" and mini.object == "model" and mini.owned_by == "team"
    assert mini == listed[1]  # the same object the list gives, created included
    assert slashed == listed[2]
    assert missing.value.code == "model_not_found"
    assert missing.value.body["message"] == "The model `gpt-nonexistent` does not exist."  # type: ignore[index]
    assert missing.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_request_naming_no_model_gets_the_first_listed(serve: Any) -> None:
    seen: list[str | None] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request.model)
        return "x"

    handler = OpenAIProtocolHandler(models=["team/bot", "team/mini"])
    with serve(AgentRunServer(agent, protocols=[handler])) as base:
        url = base + "/v1/chat/completions"
        whole = httpx.post(url, json={"messages": USER}).json()
        extra = httpx.post(url, json={"messages": USER, "temperature": 0.5}).json()  # long path
        stream = httpx.post(url, json={"messages": USER, "stream": True}).text
        named = httpx.post(url, json={"messages": USER, "model": "team/mini"}).json()
    assert whole["model"] == extra["model"] == "team/bot"
    assert '"model":"team/bot"' in stream
    assert named["model"] == "team/mini"
    assert seen == ["team/bot", "team/bot", "team/bot", "team/mini"]


def test_reasoning_content_stream_and_message(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        yield AgentEvent(EventType.REASONING, {"delta": "think "})
        yield AgentEvent(EventType.REASONING, {"delta": "hard"})
        yield "answer"

    with serve(AgentRunServer(agent)) as base:
        oai = client(base)
        chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
        completion = oai.chat.completions.create(model="m", messages=USER)
    deltas = [c.choices[0].delta for c in chunks]
    # The SDK keeps unknown fields: reasoning_content is readable as an extra attribute.
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert reasoning == "think hard"
    assert deltas[0].role == "assistant"
    assert getattr(deltas[0], "reasoning_content", None) == "think "
    assert "".join(d.content or "" for d in deltas) == "answer"
    message = completion.choices[0].message
    assert getattr(message, "reasoning_content", None) == "think hard"
    assert message.content == "answer"


# -- message content shapes --------------------------------------------------------------------


def test_message_content_shapes(serve: Any) -> None:
    seen: list[Any] = []

    def agent(request: AgentRequest) -> str:
        seen.extend((m.role.value, m.content, m.text) for m in request.messages)
        return "ok"

    parts = [
        {"type": "text", "text": "look at "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": parts},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ]
    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(
            model="m", messages=messages  # type: ignore[arg-type]
        )
    assert completion.choices[0].message.content == "ok"
    assert seen == [
        ("system", "be brief", "be brief"),
        ("user", parts, "look at this"),
        ("assistant", None, ""),
        ("tool", "42", "42"),
    ]


def test_custom_tools_and_custom_tool_calls(serve: Any) -> None:
    """The client's tool union includes ``{"type": "custom", "custom": {...}}`` tools, and
    assistant messages may hold custom calls (``custom: {name, input}``): both reach the agent."""
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "ok"

    tools = [*TOOLS, {"type": "custom",
                      "custom": {"name": "run_sql", "description": "Runs SQL.",
                                 "format": {"type": "text"}}}]  # fmt: skip
    messages = [
        *USER,
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "custom",
                         "custom": {"name": "run_sql", "input": "SELECT 1"}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
    ]  # fmt: skip
    with serve(AgentRunServer(agent)) as base:
        completion = client(base).chat.completions.create(
            model="m", messages=messages, tools=tools  # type: ignore[arg-type]
        )
    assert completion.choices[0].message.content == "ok"
    request = seen[0]
    assert [(t.type, t.name, t.description) for t in request.tools or []] == [
        ("function", "get_weather", "Weather in a city"), ("custom", "run_sql", "Runs SQL.")
    ]
    assert request.messages[1].tool_calls == [ToolCall("c1", "run_sql", "SELECT 1", "custom")]


def test_legacy_function_call_message(serve: Any) -> None:
    """An assistant turn in the deprecated ``functions`` style keeps its call for the agent."""
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "ok"

    messages = [
        *USER,
        {"role": "assistant", "content": None,
         "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]  # fmt: skip
    with serve(AgentRunServer(agent)) as base:
        client(base).chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assistant, result = seen[0].messages[1:]
    assert assistant.tool_calls == [ToolCall("", "get_weather", '{"city":"Oslo"}')]
    assert (result.name, result.text) == ("get_weather", "sunny")


def test_request_fields_reach_agent(serve: Any) -> None:
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "ok"

    with serve(AgentRunServer(agent)) as base:
        client(base).chat.completions.create(
            model="m", messages=USER, temperature=0.5, top_p=0.9, max_tokens=7, stop=["x"],
            user="u1", tool_choice="auto", tools=TOOLS,  # type: ignore[arg-type]
            extra_body={"custom_field": {"k": 1}},
        )
    req = seen[0]
    assert req.protocol == "openai"
    assert (req.temperature, req.top_p, req.max_tokens, req.stop, req.user) == (
        0.5, 0.9, 7, ["x"], "u1"
    )
    assert req.tool_choice == "auto"
    assert req.extra == {"custom_field": {"k": 1}}
    assert req.stream is False
    assert req.raw_request is not None and req.raw_request.method == "POST"


def test_n_above_one_is_bad_request(serve: Any) -> None:
    """OpenAI answers ``n=2`` with two choices; one run has one answer, so it is a clear 400."""
    with serve(AgentRunServer(lambda r: "ok")) as base:
        oai = client(base)
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(model="m", messages=USER, n=2)
        single = oai.chat.completions.create(model="m", messages=USER, n=1)
    assert info.value.param == "n"
    assert [c.message.content for c in single.choices] == ["ok"]


# -- failures ----------------------------------------------------------------------------------


class SecretError(RuntimeError):
    pass


def _raising_agent(request: AgentRequest) -> str:
    raise SecretError("the model backend is down")


def test_agent_exception_non_stream_is_500_with_message_only(serve: Any) -> None:
    with serve(AgentRunServer(_raising_agent)) as base:
        with pytest.raises(openai.InternalServerError) as info:
            client(base).chat.completions.create(model="m", messages=USER)
        raw = httpx.post(base + "/v1/chat/completions", json={"messages": USER})
    assert info.value.status_code == 500
    assert "the model backend is down" in str(info.value)
    assert raw.status_code == 500
    assert raw.headers["content-type"] == "application/json"
    assert raw.json() == {"error": {"message": "the model backend is down",
                                    "type": "server_error", "param": None, "code": None}}
    assert "Traceback" not in raw.text and "test_openai_client" not in raw.text


def test_failed_run_is_not_retried_by_the_client(serve: Any) -> None:
    """The client retries a 5xx twice by default; for a failed agent run that would run the
    agent (and its side effects) three times, so the 500 says ``x-should-retry: false``."""
    calls: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        calls.append(request)
        raise SecretError("the model backend is down")

    with serve(AgentRunServer(agent)) as base:
        retrying = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=2, timeout=10)
        with pytest.raises(openai.InternalServerError) as info:
            retrying.chat.completions.create(model="m", messages=USER)
    assert len(calls) == 1
    assert info.value.response.headers["x-should-retry"] == "false"


def test_agent_exception_stream_raises_in_client(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        yield "partial "
        raise SecretError("exploded mid-stream")

    with serve(AgentRunServer(agent)) as base:
        received: list[str] = []
        with pytest.raises(openai.APIError) as info:
            for chunk in client(base).chat.completions.create(
                model="m", messages=USER, stream=True
            ):
                received.append(chunk.choices[0].delta.content or "")
        raw = httpx.post(base + "/v1/chat/completions", json={"messages": USER, "stream": True})
    assert "exploded mid-stream" in str(info.value)
    assert received == ["partial "]
    frames = [f for f in raw.text.split("\n\n") if f]
    assert json.loads(frames[-1][len("data: "):])["error"]["message"] == "exploded mid-stream"
    assert "[DONE]" not in raw.text
    assert "Traceback" not in raw.text


def test_agent_exception_before_first_item_stream(serve: Any) -> None:
    with serve(AgentRunServer(_raising_agent)) as base:
        with pytest.raises(openai.APIError, match="the model backend is down"):
            list(client(base).chat.completions.create(model="m", messages=USER, stream=True))


def test_error_event_mid_stream(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        yield "before "
        yield AgentEvent(EventType.ERROR, {"message": "quota exceeded", "code": "quota"})
        yield "never sent"

    with serve(AgentRunServer(agent)) as base:
        received: list[str] = []
        with pytest.raises(openai.APIError) as info:
            for chunk in client(base).chat.completions.create(
                model="m", messages=USER, stream=True
            ):
                received.append(chunk.choices[0].delta.content or "")
        raw = httpx.post(base + "/v1/chat/completions", json={"messages": USER, "stream": True})
        whole = httpx.post(base + "/v1/chat/completions", json={"messages": USER})
    assert "quota exceeded" in str(info.value)
    assert received == ["before "]
    assert "never sent" not in raw.text
    error = json.loads(raw.text.split("\n\n")[-2][len("data: "):])["error"]
    assert (error["message"], error["code"]) == ("quota exceeded", "quota")
    assert whole.status_code == 500
    assert whole.json()["error"]["message"] == "quota exceeded"
    assert whole.json()["error"]["code"] == "quota"
