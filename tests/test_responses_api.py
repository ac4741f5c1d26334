"""The OpenAI Responses API (``POST /v1/responses``) against a real uvicorn and the official client.

Every streamed event is validated with the client's own ``ResponseStreamEvent`` union, and the
client's ``responses.stream()`` helper (which rebuilds the response from the events and raises on
an out-of-order or unfinished item) reads the same streams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import tool_call_shapes
from openai.types.responses import Response
from pydantic import TypeAdapter
from responses_events import check_items, parse_events

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentResponse,
    AgentRunServer,
    AGUIProtocolHandler,
    EventType,
    MessageRole,
    OpenAIProtocolHandler,
    ToolCall,
)
from agentrun_asgi.protocols.responses import (
    OpenAIResponsesProtocolHandler,
    ResponseCollector,
    ResponsesStreamEncoder,
    response_base,
)

RESPONSE = TypeAdapter(Response)
E = AgentEvent
T = EventType


def make_server(agent: Any) -> AgentRunServer:
    return AgentRunServer(
        agent,
        protocols=[OpenAIProtocolHandler(), AGUIProtocolHandler(),
                   OpenAIResponsesProtocolHandler()],
    )  # fmt: skip


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)


async def rich_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    yield E(T.REASONING, {"delta": "let me "})
    yield E(T.REASONING, {"delta": "think"})
    yield "Hello, "
    yield request.messages[-1].text
    yield E(T.TEXT, {"delta": "", "usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                            "total_tokens": 7}})  # fmt: skip


# -- the encoder alone -------------------------------------------------------------------------


def encode(items: list[Any]) -> list[dict[str, Any]]:
    encoder = ResponsesStreamEncoder(response_base("resp_1", 0, "m", {}))
    out = encoder.start()
    assert encoder.start() == b""  # once, whoever calls it
    for item in items:
        out += encoder.encode(item)
        if encoder.done:
            break
    if not encoder.done:
        out += encoder.close()
    return parse_events(out)


def test_encoder_item_order() -> None:
    events = encode([E(T.REASONING, {"delta": "r"}), "a", "b",
                     E(T.TOOL_CALL, {"id": "c1", "name": "f", "args": '{"x":1}'}), "z"])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == [
        "reasoning", "message", "function_call", "message"]
    assert final["output"][1]["content"][0]["text"] == "ab"
    assert final["output"][2]["arguments"] == '{"x":1}' and final["output"][2]["call_id"] == "c1"
    # Each item event names the output_index the item was added at.
    for event in events:
        if "output_index" in event and "item" in event:
            assert final["output"][event["output_index"]]["id"] == event["item"]["id"]


def test_encoder_parallel_chunked_calls_and_addition() -> None:
    events = encode([
        E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "fa", "args_delta": "{"}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "name": "fb", "args_delta": "["}),
        E(T.TOOL_CALL_CHUNK, {"id": "a", "args_delta": "}"}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "args_delta": "]"}),
        E(T.TEXT, {"delta": "t"}, addition={"obfuscation": "xy"}),
    ])
    final = events[-1]["response"]
    calls = [item for item in final["output"] if item["type"] == "function_call"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        ("a", "fa", "{}"), ("b", "fb", "[]")]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert deltas[0]["obfuscation"] == "xy" and deltas[0]["delta"] == "t"
    # Both calls stay open while the message comes and goes (a later chunk may still extend
    # them): they are done at the end of the run, after it.
    kinds = [e["type"] for e in events]
    assert kinds.index("response.function_call_arguments.done") > kinds.index(
        "response.content_part.done")
    assert check_items(events) == final["output"]


def collect(items: list[Any]) -> list[dict[str, Any]]:
    """The JSON form's output for the same items."""
    collector = ResponseCollector()
    for item in items:
        collector.add(item)
    return collector.response(response_base("resp_1", 0, "m", {}))["output"]  # type: ignore[no-any-return]


def summary(output: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Output items without their made-up ids."""
    return [(item["type"], item["call_id"], item["name"], item["arguments"])
            if item["type"] == "function_call" else (item["type"], item["content"][0]["text"])
            for item in output]  # fmt: skip


_SPLIT_BY = {"text": "Checking.", "reasoning": E(T.REASONING, {"delta": "Hmm."})}


@pytest.mark.parametrize("between", list(_SPLIT_BY))
@pytest.mark.parametrize("later_id", ["call_w", None])
def test_encoder_a_call_split_by_text_is_one_item(between: str, later_id: str | None) -> None:
    """A call whose chunks text or reasoning splits stays one ``function_call`` item: it stays
    open while the other item comes and goes, and the stream ends with the JSON form's output."""
    items = [
        E(T.TOOL_CALL_CHUNK, {"id": "call_w", "name": "get_weather", "args_delta": '{"city":'}),
        _SPLIT_BY[between],
        E(T.TOOL_CALL_CHUNK, {"id": later_id, "args_delta": '"Oslo"}'}),
        "Done.",
    ]
    events = encode(items)
    output = check_items(events)
    kind = "message" if between == "text" else "reasoning"
    text = "Checking." if between == "text" else "Hmm."
    assert summary(output) == summary(collect(items)) == [
        ("function_call", "call_w", "get_weather", '{"city":"Oslo"}'), (kind, text),
        ("message", "Done.")]  # fmt: skip
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city":', '"Oslo"}']
    # The item between is done before the call goes on; the call is done at the end.
    kinds = [(e["type"], e.get("output_index")) for e in events]
    later = [i for i, k in enumerate(kinds) if k == ("response.function_call_arguments.delta", 0)]
    assert kinds.index(("response.output_item.done", 1)) < later[1]
    assert kinds[-2] == ("response.output_item.done", 0)


def test_encoder_a_call_is_done_by_its_result_or_a_whole_call() -> None:
    """A streamed call's item is done once it is known complete (a whole TOOL_CALL or a
    TOOL_RESULT for it, an id-less result meaning the last call), so the usual run of calls,
    results and an answer keeps each item's events together. Arguments for a call already done
    are dropped in both forms: the stream cannot add to a done item, and a second item with the
    same call id would be a second call."""
    items = [
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "fa", "args_delta": "{"}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "fb", "args_delta": "{"}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "args_delta": "}"}),
        E(T.TOOL_RESULT, {"id": "call_a", "result": "ra"}),
        E(T.TOOL_CALL, {"id": "call_b", "args": "}"}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_c", "name": "fc", "args_delta": "{}"}),
        E(T.TOOL_RESULT, {"result": "rc"}),  # no id: the last call's
        "The answer.",
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "args_delta": "late"}),
        E(T.TOOL_CALL_CHUNK, {"args_delta": "late"}),  # continues call_a, done too
        "More.",
    ]
    events = encode(items)
    output = check_items(events)
    assert summary(output) == summary(collect(items)) == [
        ("function_call", "call_a", "fa", "{}"), ("function_call", "call_b", "fb", "{}"),
        ("function_call", "call_c", "fc", "{}"), ("message", "The answer."),
        ("message", "More.")]  # fmt: skip
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert done == [0, 1, 2, 3, 4]
    kinds = [e["type"] for e in events]
    assert kinds.index("response.content_part.added") > max(
        i for i, kind in enumerate(kinds) if kind == "response.function_call_arguments.done")


@pytest.mark.parametrize("shape", list(tool_call_shapes.SHAPES))
def test_encoder_matches_collector_for_every_shape(shape: str) -> None:
    given = {call_id for call_id, _, _ in tool_call_shapes.SHAPES[shape][1]}

    def run() -> list[Any]:
        return ["Let me check.", *tool_call_shapes.events(shape), "Checked."]

    def made_up_ids_hidden(output: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return [(kind, "*" if kind == "function_call" and call_id not in given else call_id,
                 *rest) for kind, call_id, *rest in summary(output)]  # fmt: skip

    assert made_up_ids_hidden(check_items(encode(run()))) == made_up_ids_hidden(collect(run()))


def test_encoder_error_and_length() -> None:
    failed = encode(["partial", E(T.ERROR, {"message": "boom", "code": "agent_error"}), "never"])
    assert failed[-1]["type"] == "response.failed"
    response = failed[-1]["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": "boom", "type": "agent_error"}
    assert response["output"][0]["content"][0]["text"] == "partial"
    cut = encode(["a", E(T.TEXT, {"delta": "", "finish_reason": "length"})])
    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_encoder_null_arguments_are_no_arguments() -> None:
    """``args``/``args_delta`` of None add no ``null`` text; a whole call without any is "{}"."""
    def run() -> list[Any]:
        return [E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": None}),
                E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "g", "args_delta": None}),
                E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": '{"x":1}'}),
                E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": None})]  # fmt: skip

    assert summary(check_items(encode(run()))) == summary(collect(run())) == [
        ("function_call", "call_a", "f", "{}"), ("function_call", "call_b", "g", '{"x":1}')]


# -- end to end with the official client -------------------------------------------------------


def test_non_stream_output_text(serve: Any) -> None:
    seen: list[AgentRequest] = []

    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        seen.append(request)
        async for item in rich_agent(request):
            yield item

    with serve(make_server(agent)) as base:
        response = client(base).responses.create(
            model="my-model", input="world", instructions="Be brief.", temperature=0.5,
            max_output_tokens=50, metadata={"k": "v"},
        )  # fmt: skip
    RESPONSE.validate_python(response.model_dump())
    assert response.output_text == "Hello, world"
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == "my-model"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == "let me think"  # type: ignore[union-attr,index]
    assert response.usage is not None and response.usage.total_tokens == 7
    assert response.usage.input_tokens == 3 and response.usage.output_tokens == 4
    assert response.instructions == "Be brief." and response.metadata == {"k": "v"}
    request = seen[0]
    assert request.protocol == "responses" and request.model == "my-model"
    assert [(m.role, m.text) for m in request.messages] == [
        (MessageRole.SYSTEM, "Be brief."), (MessageRole.USER, "world")]
    assert request.temperature == 0.5 and request.max_tokens == 50 and not request.stream
    assert request.extra == {"metadata": {"k": "v"}}


def test_stream_events_and_final_text(serve: Any) -> None:
    with serve(make_server(rich_agent)) as base:
        oai = client(base)
        events = list(oai.responses.create(model="m", input="stream", stream=True))
        # The client's accumulating helper rebuilds the response and checks item identities.
        with oai.responses.stream(model="m", input="stream") as stream:
            helper_deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for once in ("response.created", "response.in_progress", "response.completed"):
        assert kinds.count(once) == 1, once
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for needed in ("response.output_item.added", "response.content_part.added",
                   "response.output_text.delta", "response.output_text.done",
                   "response.content_part.done", "response.output_item.done",
                   "response.reasoning_text.delta"):  # fmt: skip
        assert needed in kinds, needed
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello, stream"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "Hello, stream"
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == "Hello, stream" and completed.status == "completed"
    assert completed.id == events[0].response.id  # type: ignore[union-attr]
    assert "".join(helper_deltas) == "Hello, stream"
    assert final.output_text == "Hello, stream"


def test_function_call_via_events(serve: Any) -> None:
    seen: list[AgentRequest] = []

    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        seen.append(request)
        yield E(T.TOOL_CALL_CHUNK, {"id": "call_w", "name": "get_weather",
                                    "args_delta": '{"city":'})  # fmt: skip
        yield E(T.TOOL_CALL_CHUNK, {"id": "call_w", "args_delta": '"Paris"}'})

    tools = [{"type": "function", "name": "get_weather", "description": "Weather now.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
              "strict": False}]  # fmt: skip
    with serve(make_server(agent)) as base:
        oai = client(base)
        events = list(oai.responses.create(model="m", input="weather?", tools=tools,  # type: ignore[arg-type]
                                           stream=True))  # fmt: skip
        whole = oai.responses.create(model="m", input="weather?", tools=tools)  # type: ignore[arg-type]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert deltas == ['{"city":', '"Paris"}']
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"city":"Paris"}'
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    assert added.item.call_id == "call_w" and added.item.arguments == ""
    call = whole.output[0]
    assert call.type == "function_call" and call.call_id == "call_w"
    assert call.arguments == '{"city":"Paris"}'
    assert whole.tools[0].name == "get_weather"  # type: ignore[union-attr]
    tool = seen[0].tools[0]  # type: ignore[index]
    assert (tool.name, tool.type, tool.description) == ("get_weather", "function", "Weather now.")


def _calls_of(output: list[Any]) -> list[tuple[str, str, str]]:
    return [(item.call_id, item.name, item.arguments) for item in output]


@pytest.mark.parametrize("shape", list(tool_call_shapes.SHAPES))
def test_tool_call_chunk_without_id_continues_the_last_call(serve: Any, shape: str) -> None:
    """The id rule of TOOL_CALL_CHUNK (see tool_call_shapes): one ``function_call`` item per
    call, in the raw stream, the client's stream helper and the JSON form."""

    def agent(request: AgentRequest) -> list[AgentEvent]:
        return tool_call_shapes.events(shape)

    with serve(make_server(agent)) as base:
        oai = client(base)
        events = list(oai.responses.create(model="m", input="go", stream=True))
        with oai.responses.stream(model="m", input="go") as stream:
            list(stream)
            helper = stream.get_final_response()
        whole = oai.responses.create(model="m", input="go")
    added = [e.item for e in events if e.type == "response.output_item.added"]
    streamed: dict[str, list[str]] = {item.id: [item.call_id, item.name, ""] for item in added}  # type: ignore[union-attr]
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            streamed[event.item_id][2] += event.delta
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert sorted(item.id for item in done) == sorted(streamed)  # type: ignore[type-var]
    tool_call_shapes.check([(i, n, a) for i, n, a in streamed.values()], shape)
    tool_call_shapes.check(_calls_of(done), shape)
    completed = events[-1].response  # type: ignore[union-attr]
    for response in (completed, helper, whole):
        tool_call_shapes.check(_calls_of(response.output), shape)


def test_a_call_split_by_text_is_one_call_for_the_client(serve: Any) -> None:
    """TOOL_CALL_CHUNK(id), text, TOOL_CALL_CHUNK(no id): the client's stream helper (which
    refuses two items with one call id) and the raw stream end with the JSON form's output, one
    call with its whole arguments."""

    async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        yield E(T.TOOL_CALL_CHUNK, {"id": "call_w", "name": "get_weather",
                                    "args_delta": '{"city":'})  # fmt: skip
        yield "Checking the weather."
        yield E(T.TOOL_CALL_CHUNK, {"args_delta": '"Oslo"}'})

    with serve(make_server(agent)) as base:
        oai = client(base)
        events = list(oai.responses.create(model="m", input="weather?", stream=True))
        with oai.responses.stream(model="m", input="weather?") as stream:
            helper_deltas = [(e.output_index, e.snapshot) for e in stream
                             if e.type == "response.function_call_arguments.delta"]  # fmt: skip
            helper = stream.get_final_response()
        whole = oai.responses.create(model="m", input="weather?")

    def summary_of(response: Response) -> list[tuple[str, ...]]:
        return summary([item.model_dump() for item in response.output])

    expected = [("function_call", "call_w", "get_weather", '{"city":"Oslo"}'),
                ("message", "Checking the weather.")]  # fmt: skip
    completed = events[-1].response  # type: ignore[union-attr]
    for response in (whole, completed, helper):
        assert summary_of(response) == expected
    assert helper.output_text == whole.output_text == "Checking the weather."
    assert helper_deltas == [(0, '{"city":'), (0, '{"city":"Oslo"}')]
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["function_call", "message"]


def test_function_call_without_arguments_is_an_empty_object(serve: Any) -> None:
    """A call with no arguments is ``"{}"``, streamed or not (``""`` is not JSON)."""

    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(tool_calls=[ToolCall("call_t", "get_time")])

    with serve(make_server(agent)) as base:
        oai = client(base)
        whole = oai.responses.create(model="m", input="time?")
        with oai.responses.stream(model="m", input="time?") as stream:
            deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
            streamed = stream.get_final_response()
    assert deltas == ["{}"]
    for response in (whole, streamed):
        assert [(item.type, item.call_id, item.arguments)  # type: ignore[union-attr]
                for item in response.output] == [("function_call", "call_t", "{}")]  # fmt: skip


def test_input_items_round_trip(serve: Any) -> None:
    """A second turn sends the call and its output back; the agent sees Chat-shaped messages."""
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> AgentResponse:
        seen.append(request)
        return AgentResponse(content="It is sunny.")

    items: list[Any] = [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "weather?"},
                     {"type": "input_image", "image_url": "https://example.invalid/a.png"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_w", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_w", "output": "sunny"},
    ]  # fmt: skip
    with serve(make_server(agent)) as base:
        response = client(base).responses.create(model="m", input=items)
    assert response.output_text == "It is sunny."
    messages = seen[0].messages
    assert [m.role for m in messages] == [MessageRole.DEVELOPER, MessageRole.USER,
                                          MessageRole.ASSISTANT, MessageRole.TOOL]  # fmt: skip
    assert messages[1].text == "weather?"
    assert messages[1].content[1] == {"type": "image_url",  # type: ignore[index]
                                      "image_url": {"url": "https://example.invalid/a.png"}}
    call = messages[2].tool_calls[0]  # type: ignore[index]
    assert (call.id, call.name, call.arguments) == ("call_w", "get_weather", '{"city":"Paris"}')
    assert (messages[3].tool_call_id, messages[3].content) == ("call_w", "sunny")


_DEEP = b"[" * 300 + b"]" * 300


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"not json", None),
        (b"[]", None),
        (b"{}", "input"),
        (b'{"input": 5}', "input"),
        (b'{"input": [{"role": "robot", "content": "x"}]}', "input[0].role"),
        (b'{"input": [{"type": "function_call", "name": "f"}]}', "input[0].call_id"),
        (b'{"input": "x", "stream": "yes"}', "stream"),
        (b'{"input": "x", "tools": [{"type": "function"}]}', "tools[0].name"),
        (b'{"input": [{"type": "web_search_call"}]}', "input[0].type"),
        (b'{"input": [{"role": "user", "content": "x", "id": 5}]}', "input[0].id"),
        (b'{"input": [{"role": "user", "content": [], "id": []}]}', "input[0].id"),
        # Fields the response object echoes back: what its schema says, and nothing orjson
        # cannot write back (it reads 1024 levels of nesting, writes 254), streamed or not.
        (b'{"input": "x", "metadata": [1]}', "metadata"),
        (b'{"input": "x", "text": "plain"}', "text"),
        (b'{"input": "x", "truncation": 1}', "truncation"),
        (b'{"input": "x", "previous_response_id": {}}', "previous_response_id"),
        (b'{"input": "x", "parallel_tool_calls": "yes"}', "parallel_tool_calls"),
        # Fields of the API the agent reads from extra, and nested fields the response echoes.
        (b'{"input": "x", "store": "yes"}', "store"),
        (b'{"input": "x", "reasoning": "high"}', "reasoning"),
        (b'{"input": "x", "stream_options": 5}', "stream_options"),
        (b'{"input": "x", "reasoning": {"effort": 5}}', "reasoning.effort"),
        (b'{"input": "x", "reasoning": {"summary": true}}', "reasoning.summary"),
        (b'{"input": "x", "stream_options": {"include_obfuscation": "no"}}',
         "stream_options.include_obfuscation"),
        (b'{"input": "x", "include": "reasoning.encrypted_content"}', "include"),
        (b'{"input": "x", "include": [5]}', "include[0]"),
        (b'{"input": "x", "text": {"format": "json"}}', "text.format"),
        (b'{"input": "x", "text": {"format": {"schema": {}}}}', "text.format.type"),
        (b'{"input": "x", "metadata": {"a": "b", "n": 5}}', "metadata.n"),
        (b'{"input": [{"role": "user", "content": [{"type": "input_image", "image_url": 5}]}]}',
         "input[0].content[0].image_url"),
        (b'{"input": "x", "metadata": {"a": %s}}' % _DEEP, "metadata.a"),
        (b'{"input": "x", "stream": true, "metadata": {"a": %s}}' % _DEEP, "metadata.a"),
        (b'{"input": "x", "text": {"format": {"type": "json_schema", "schema": %s}}}' % _DEEP,
         "text"),
        (b'{"input": "x", "tool_choice": {"type": %s}}' % _DEEP, "tool_choice"),
        (b'{"input": "x", "stream": true, "tools": [{"type": "web_search", "x": %s}]}' % _DEEP,
         "tools"),
    ],
)
def test_bad_input_is_400_json(serve: Any, body: bytes, param: str | None) -> None:
    with serve(make_server(rich_agent)) as base:
        r = httpx.post(base + "/v1/responses", content=body,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_null_echoed_fields_stay_valid(serve: Any) -> None:
    """``parallel_tool_calls: null`` (the default) echoes as ``true``: the schema's boolean."""
    with serve(make_server(rich_agent)) as base:
        r = httpx.post(base + "/v1/responses", json={"input": "x", "parallel_tool_calls": None})
    assert r.status_code == 200, r.text
    assert r.json()["parallel_tool_calls"] is True


def test_a_request_with_no_model_gets_one_the_model_list_has(serve: Any) -> None:
    """With ``models=`` set on Chat Completions, a Responses request that names no model is
    answered with the first of them (as Chat Completions answers), not a model
    ``GET /v1/models`` does not list; ``default_model=`` names one of its own."""
    seen: list[str] = []

    def agent(request: AgentRequest) -> str:
        seen.append(str(request.model))
        return "ok"

    chat = OpenAIProtocolHandler(models=["acme-1", "acme-2"])
    server = AgentRunServer(agent, protocols=[chat, OpenAIResponsesProtocolHandler()])
    own = AgentRunServer(agent, protocols=[OpenAIResponsesProtocolHandler(default_model="own")])
    with serve(server) as base, serve(own) as base_own:
        listed = httpx.get(base + "/v1/models").json()["data"][0]["id"]
        chat_model = httpx.post(base + "/v1/chat/completions",
                                json={"messages": [{"role": "user", "content": "x"}]}).json()
        response = httpx.post(base + "/v1/responses", json={"input": "x"}).json()
        streamed = httpx.post(base + "/v1/responses", json={"input": "x", "stream": True}).text
        named = httpx.post(base + "/v1/responses", json={"input": "x", "model": "m"}).json()
        alone = httpx.post(base_own + "/v1/responses", json={"input": "x"}).json()
    assert listed == chat_model["model"] == response["model"] == "acme-1"
    assert '"model":"acme-1"' in streamed
    assert named["model"] == "m" and alone["model"] == "own"
    assert seen == ["acme-1", "acme-1", "acme-1", "m", "own"]


def test_the_server_keeps_no_responses(serve: Any) -> None:
    """What the README says of state: previous_response_id and the like reach the agent in
    extra, a built-in tool is a Tool named after its type, a stored response is not found."""
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> AgentResponse:
        seen.append(request)
        return AgentResponse(content="ok")

    with serve(make_server(agent)) as base:
        oai = client(base)
        response = oai.responses.create(
            model="m", input="again", previous_response_id="resp_x", store=True,
            reasoning={"effort": "low"}, include=["reasoning.encrypted_content"],
            tools=[{"type": "web_search"}],
        )  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            oai.responses.retrieve(response.id)
    assert response.previous_response_id == "resp_x" and response.store is False
    assert seen[0].extra == {"previous_response_id": "resp_x", "store": True,
                             "reasoning": {"effort": "low"},
                             "include": ["reasoning.encrypted_content"]}  # fmt: skip
    tool = seen[0].tools[0]  # type: ignore[index]
    assert (tool.name, tool.type) == ("web_search", "web_search")


def test_an_item_reference_says_to_send_the_item(serve: Any) -> None:
    """The Vercel AI SDK's Responses model (store: true by default) sends a tool loop's earlier
    items back as item_reference; the server keeps none, so the 400 says what to change."""
    body = {"input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": "fc_1"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "y"}]}
    with serve(make_server(rich_agent)) as base:
        r = httpx.post(base + "/v1/responses", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "input[1].type"
    assert "keeps no items" in error["message"] and "'store': false" in error["message"]


def test_bad_input_through_the_client(serve: Any) -> None:
    with serve(make_server(rich_agent)) as base:
        with pytest.raises(openai.BadRequestError) as caught:
            client(base).responses.create(model="m", input=[{"role": "robot", "content": "x"}])  # type: ignore[list-item,misc]
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "input[0].role"  # type: ignore[index]


def test_agent_failure(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        yield "half"
        raise RuntimeError("the model is down")

    with serve(make_server(agent)) as base:
        with pytest.raises(openai.InternalServerError, match="the model is down") as info:
            client(base).responses.create(model="m", input="x")
        assert info.value.response.headers["x-should-retry"] == "false"
        events = list(client(base).responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "the model is down"  # type: ignore[union-attr]


def test_unsendable_item_is_a_clear_500(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        yield AgentEvent(EventType.TOOL_CALL, {"id": "c", "name": "f", "args": {1, 2}})

    with serve(make_server(agent)) as base:
        r = httpx.post(f"{base}/v1/responses", json={"model": "m", "input": "x"})
    assert r.status_code == 500
    assert "not JSON serializable" in r.json()["error"]["message"]
    assert r.headers["x-should-retry"] == "false"


def test_content_filter_finish_is_incomplete(serve: Any) -> None:
    """``finish_reason="content_filter"`` (a ``ContentFilterFinishReasonError`` on Chat) is an
    incomplete response with that reason, as ``"length"`` is one with ``max_output_tokens``."""

    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(content="I can", finish_reason="content_filter")

    with serve(make_server(agent)) as base:
        oai = client(base)
        whole = oai.responses.create(model="m", input="x")
        last = list(oai.responses.create(model="m", input="x", stream=True))[-1]
    assert last.type == "response.incomplete"
    for response in (whole, last.response):
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "content_filter"


@pytest.mark.parametrize("usage", [{"prompt_tokens": "many", "completion_tokens": 2},
                                   {"input_tokens": float("inf")}, 5])
def test_usage_the_agent_got_wrong_does_not_fail_the_run(serve: Any, usage: Any) -> None:
    """A count that is not a number reads as 0: a finished run is not turned into a 500 (which
    the official clients retry, running the agent again) or a response.failed."""

    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        yield AgentEvent(EventType.TEXT, {"delta": "done", "usage": usage})

    with serve(make_server(agent)) as base:
        response = client(base).responses.create(model="m", input="x")
        events = list(client(base).responses.create(model="m", input="x", stream=True))
    assert response.output_text == "done"
    assert response.usage is not None and response.usage.input_tokens == 0
    assert events[-1].type == "response.completed"


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
     "prompt_tokens_details": {"cached_tokens": 4},
     "completion_tokens_details": {"reasoning_tokens": 2}},
    {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
     "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 1},
     "output_tokens_details": {"reasoning_tokens": 2}},
])  # fmt: skip
def test_usage_breakdown_is_kept(serve: Any, usage: dict[str, Any]) -> None:
    """Cached and reasoning token counts, in Chat's or the Responses' names, reach the client
    (Chat Completions and AG-UI report them; they read 0 here)."""

    async def agent(request: AgentRequest) -> AsyncIterator[AgentEvent]:
        yield AgentEvent(EventType.TEXT, {"delta": "done", "usage": usage})

    with serve(make_server(agent)) as base:
        oai = client(base)
        whole = oai.responses.create(model="m", input="x")
        with oai.responses.stream(model="m", input="x") as stream:
            streamed = stream.get_final_response()
    for response in (whole, streamed):
        assert response.usage is not None
        assert response.usage.input_tokens_details.cached_tokens == 4
        assert response.usage.input_tokens_details.cache_write_tokens == (
            1 if "input_tokens_details" in usage else 0)
        assert response.usage.output_tokens_details.reasoning_tokens == 2
        assert response.usage.total_tokens == 15


def test_routes_do_not_collide_with_chat() -> None:
    server = make_server(rich_agent)
    paths = {(r.path, tuple(r.methods)) for r in server.routes}
    assert ("/v1/responses", ("POST",)) in paths
    assert ("/v1/chat/completions", ("POST",)) in paths and ("/v1/models", ("GET",)) in paths


def test_chat_completions_still_served(serve: Any) -> None:
    with serve(make_server(rich_agent)) as base:
        completion = client(base).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "chat"}])
    assert completion.choices[0].message.content == "Hello, chat"
    assert json.loads(completion.model_dump_json())["object"] == "chat.completion"
