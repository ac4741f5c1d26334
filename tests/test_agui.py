"""AG-UI 1.0: the encoder alone (sans-IO), then end to end against a real uvicorn.

Every streamed event is validated with the official ``ag_ui.core`` 1.0 models and the run's
structure with ``agui_verify`` (START/END pairing, nothing after the end, text closed before a
tool call or reasoning, everything closed before RUN_FINISHED).
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import openai
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import check_event, of_type, parse_sse, types, verify, verify_order

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentResponse,
    AgentRunServer,
    AGUIProtocolHandler,
    EventType,
    Message,
    MessageRole,
    OpenAIProtocolHandler,
    ToolCall,
)
from agentrun_asgi.protocols.agui import AGUIStreamEncoder

E = AgentEvent
T = EventType
ROOT = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------------


def encode_run(items: list[Any], *, thread: str = "t", run: str = "r") -> list[dict[str, Any]]:
    """Feed ``items`` to a fresh encoder as ``run_stream`` does; the verified events."""
    encoder = AGUIStreamEncoder(thread, run)
    out = encoder.start()
    for item in items:
        out += encoder.encode(item)
        if encoder.done:
            break
    out += encoder.close()
    return verify(parse_sse(out))


def post_run(
    base_url: str, body: Any, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One AG-UI run over HTTP: checks the SSE response and returns its verified events."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = {"content-type": "application/json", "accept": "text/event-stream", **(headers or {})}
    response = httpx.post(base_url + "/ag-ui/agent", content=content, headers=hdrs, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return verify(parse_sse(response.content), input_calls(body))


def input_calls(body: Any) -> set[str]:
    """The ids of the tool calls in a run input's messages (the client holds them already)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    return {call["id"] for message in messages or () if isinstance(message, dict)
            for call in message.get("toolCalls") or ()}  # fmt: skip


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"threadId": "thread-1", "runId": "run-1",
            "messages": [{"id": "u1", "role": "user", "content": text}], **extra}  # fmt: skip


def text_of(events: list[dict[str, Any]]) -> list[str]:
    """The text of each text message, in order."""
    out: list[str] = []
    for e in events:
        if e["type"] == "TEXT_MESSAGE_START":
            out.append("")
        elif e["type"] == "TEXT_MESSAGE_CONTENT":
            out[-1] += e["delta"]
    return out


# -- the verifier itself can fail -------------------------------------------------------------


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"}],
        [{"type": "RUN_STARTED", "threadId": "t", "runId": "r", "protocolVersion": "1.0"},
         {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"},
         {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"}],
        [{"type": "RUN_STARTED", "threadId": "t", "runId": "r", "protocolVersion": "1.0"},
         {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"},
         {"type": "TOOL_CALL_START", "toolCallId": "c", "toolCallName": "f"},
         {"type": "TOOL_CALL_END", "toolCallId": "c"},
         {"type": "TEXT_MESSAGE_END", "messageId": "m"},
         {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"}],
        [{"type": "RUN_STARTED", "threadId": "t", "runId": "r", "protocolVersion": "1.0"},
         {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"},
         {"type": "CUSTOM", "name": "late", "value": 1}],
    ],
)  # fmt: skip
def test_verifier_rejects_bad_structure(events: list[dict[str, Any]]) -> None:
    with pytest.raises(AssertionError):
        verify_order(events)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant", "extra": 1},
        {"type": "TOOL_CALL_START", "toolCallId": "c", "toolCallName": "f",
         "parentMessageId": None},
        {"type": "RUN_FINISHED", "threadId": "t", "runId": "r", "outcome": None},
        {"type": "REASONING_MESSAGE_START", "messageId": "m", "role": "assistant"},
        {"type": "RUN_FINISHED", "threadId": "t", "runId": "r",
         "outcome": {"type": "interrupt", "interrupts": [{"id": "i", "reason": "x", "bogus": 1}]}},
    ],
)  # fmt: skip
def test_event_check_rejects_what_the_1_0_client_rejects(event: dict[str, Any]) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError or our assertion
        check_event(event)


# -- the encoder, sans-IO ----------------------------------------------------------------------


def test_empty_run_is_started_and_finished() -> None:
    assert types(encode_run([])) == ["RUN_STARTED", "RUN_FINISHED"]


def test_run_started_once_and_first_even_when_not_asked() -> None:
    encoder = AGUIStreamEncoder("t", "r", "parent")
    events = parse_sse(encoder.encode("hi") + encoder.close())
    assert encoder.start() == b""
    verify(events)
    assert events[0] == {"type": "RUN_STARTED", "threadId": "t", "runId": "r",
                         "protocolVersion": "1.0", "parentRunId": "parent"}  # fmt: skip
    assert events[-1] == {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"}


def test_consecutive_text_is_one_message_and_empty_deltas_are_skipped() -> None:
    events = encode_run(["", "Hel", E(T.TEXT, {"delta": "lo"}), E(T.TEXT, {"delta": ""}), " you"])
    assert types(events) == ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
                             "RUN_FINISHED"]  # fmt: skip
    assert text_of(events) == ["Hello you"]
    assert events[1]["role"] == "assistant"
    assert len({e["messageId"] for e in events[1:6]}) == 1


def test_text_tool_call_text() -> None:
    events = encode_run([
        "Let me look. ",
        E(T.TOOL_CALL, {"id": "call_1", "name": "lookup", "args": {"q": "x"}}),
        E(T.TOOL_RESULT, {"id": "call_1", "result": "found"}),
        "It is found.",
    ])  # fmt: skip
    assert types(events) == [
        "RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]  # fmt: skip
    start, args, result = events[4], events[5], events[7]
    assert start == {"type": "TOOL_CALL_START", "toolCallId": "call_1", "toolCallName": "lookup",
                     "parentMessageId": events[1]["messageId"]}  # fmt: skip
    assert orjson.loads(args["delta"]) == {"q": "x"}  # non-string args are sent as JSON text
    assert result["content"] == "found" and result["role"] == "tool"
    assert events[8]["messageId"] != events[1]["messageId"]
    assert text_of(events) == ["Let me look. ", "It is found."]


def test_interleaved_streamed_tool_calls() -> None:
    events = encode_run([
        E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "weather", "args_delta": '{"city":'}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "name": "time", "args_delta": '{"tz":'}),
        E(T.TOOL_CALL_CHUNK, {"id": "a", "args_delta": '"Oslo"}'}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "args_delta": '"UTC"}'}),
        E(T.TOOL_RESULT, {"id": "b", "result": "12:00"}),
        E(T.TOOL_RESULT, {"id": "a", "content": "sunny"}),
    ])  # fmt: skip
    starts = of_type(events, "TOOL_CALL_START")
    assert [(s["toolCallId"], s["toolCallName"]) for s in starts] == [
        ("a", "weather"),
        ("b", "time"),
    ]
    assert len({s["parentMessageId"] for s in starts}) == 1  # one assistant message, both calls
    for call, want in (("a", {"city": "Oslo"}), ("b", {"tz": "UTC"})):
        args = "".join(
            e["delta"] for e in of_type(events, "TOOL_CALL_ARGS") if e["toolCallId"] == call
        )
        assert orjson.loads(args) == want
        assert len([e for e in of_type(events, "TOOL_CALL_END") if e["toolCallId"] == call]) == 1
    # each call is ended by its own result, not before: both were open at once
    kinds = [(e["type"], e.get("toolCallId")) for e in events]
    assert kinds.index(("TOOL_CALL_END", "b")) == kinds.index(("TOOL_CALL_RESULT", "b")) - 1
    assert kinds.index(("TOOL_CALL_ARGS", "a")) < kinds.index(("TOOL_CALL_START", "b"))
    assert [r["content"] for r in of_type(events, "TOOL_CALL_RESULT")] == ["12:00", "sunny"]


def test_streamed_tool_call_ends_at_run_end_and_on_text() -> None:
    events = encode_run([E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "f", "args_delta": "{}"})])
    assert types(events)[1:] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END",
                                 "RUN_FINISHED"]  # fmt: skip
    events = encode_run([E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "f", "args_delta": "{}"}), "ok"])
    assert types(events)[3:5] == ["TOOL_CALL_END", "TEXT_MESSAGE_START"]
    # a whole TOOL_CALL for a streamed id finishes it
    events = encode_run([E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "f", "args_delta": "{"}),
                         E(T.TOOL_CALL, {"id": "a", "name": "f", "args": "}"})])  # fmt: skip
    assert types(events)[1:] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS",
                                 "TOOL_CALL_END", "RUN_FINISHED"]  # fmt: skip


def test_reopened_tool_call_repeats_its_name_and_parent() -> None:
    """1.0: a reopening TOOL_CALL_START MUST agree with the call it reopens; the official
    client otherwise renames the call (here to "") in its message history."""
    events = encode_run([
        "Searching. ",
        E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "search", "args_delta": '{"q":'}),
        "Still searching. ",  # text in between ends the streamed call ...
        E(T.TOOL_CALL_CHUNK, {"id": "a", "args_delta": '"x"}'}),  # ... which this reopens
        E(T.TOOL_RESULT, {"id": "a", "result": "found"}),
    ])  # fmt: skip
    first, again = of_type(events, "TOOL_CALL_START")
    assert first == again == {"type": "TOOL_CALL_START", "toolCallId": "a",
                              "toolCallName": "search",
                              "parentMessageId": events[1]["messageId"]}  # fmt: skip


def client_messages(events: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The assistant messages @ag-ui/client 1.0 builds from a run, as (id, call ids): a text
    message is one; a call joins its parentMessageId's message (made if missing), or without
    one becomes a message of its own, named after the call."""
    messages: dict[str, list[str]] = {}
    for e in events:
        if e["type"] == "TEXT_MESSAGE_START":
            messages.setdefault(e["messageId"], [])
        elif e["type"] == "TOOL_CALL_START":
            calls = messages.setdefault(e.get("parentMessageId") or e["toolCallId"], [])
            if e["toolCallId"] not in calls:
                calls.append(e["toolCallId"])
    return list(messages.items())


def test_parallel_calls_without_text_are_one_assistant_message() -> None:
    """Calls with no text before them carry one shared parentMessageId, so the client holds
    them in one assistant message, as OpenAI's history has parallel calls. Without it, each
    call was an assistant message of its own: with the results a front-end appends, the next
    request's history read [assistant(a), assistant(b), tool(a), tool(b)], which OpenAI
    refuses (a tool_calls message must be followed by its tool messages)."""
    events = encode_run([
        E(T.REASONING, {"delta": "two lookups"}),
        E(T.TOOL_CALL, {"id": "a", "name": "f", "args": "{}"}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "name": "g", "args_delta": "{}"}),
        E(T.TOOL_CALL, {"id": "c", "name": "h", "args": "{}"}),
        E(T.TOOL_RESULT, {"id": "a", "result": "A"}),
        E(T.TOOL_CALL, {"id": "d", "name": "f", "args": "{}"}),  # a new step: a new message
        "Done.",
        E(T.TOOL_CALL, {"id": "e", "name": "f", "args": "{}"}),  # after text: that message
    ])  # fmt: skip
    texts = [e["messageId"] for e in of_type(events, "TEXT_MESSAGE_START")]
    assert [calls for _, calls in client_messages(events)] == [["a", "b", "c"], ["d"], ["e"]]
    assert client_messages(events)[2][0] == texts[0]


def test_result_for_a_call_of_the_input_answers_it_as_it_is(serve: Any) -> None:
    """A run that gives the result of an earlier run's call (approved in a HITL interrupt, run
    on resume) sends the result alone: a made-up TOOL_CALL_START (name "", ARGS "{}") made the
    official JS client rename the call it holds to "" and its arguments '{"path":"x"}{}'."""

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield E(T.TOOL_RESULT, {"id": "call_del", "result": "deleted"})
        yield E(T.TOOL_RESULT, {"id": "call_new", "result": "made up"})
        yield "Done."

    call = {"id": "call_del", "type": "function",
            "function": {"name": "delete", "arguments": '{"path":"x"}'}}  # fmt: skip
    body = user("delete x", resume=[{"interruptId": "ok", "status": "resolved"}])
    body["messages"].append({"id": "a1", "role": "assistant", "toolCalls": [call]})
    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, body)
    kinds = [(e["type"], e.get("toolCallId")) for e in events[1:-1]]
    assert kinds == [
        ("TOOL_CALL_RESULT", "call_del"),
        ("TOOL_CALL_START", "call_new"), ("TOOL_CALL_ARGS", "call_new"),
        ("TOOL_CALL_END", "call_new"), ("TOOL_CALL_RESULT", "call_new"),
        ("TEXT_MESSAGE_START", None), ("TEXT_MESSAGE_CONTENT", None), ("TEXT_MESSAGE_END", None),
    ]  # fmt: skip
    assert events[1]["content"] == "deleted"


def test_messages_the_agent_adds_to_its_request_are_not_the_clients(serve: Any) -> None:
    """The client holds the calls of the input it sent, not of what the agent appends to
    ``request.messages`` while it runs (a tool loop keeping its own history): a result for such
    a call still gets its made-up START, and a dict appended there breaks nothing. Read live,
    the list gave a bare result for a call the client never saw, and the dict a RUN_ERROR."""

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        own = ToolCall(id="call_own", name="f", arguments="{}")
        request.messages.append(Message(role=MessageRole.ASSISTANT, tool_calls=[own]))
        request.messages.append({"role": "tool", "tool_call_id": "call_own", "content": "r"})
        yield E(T.TOOL_RESULT, {"id": "call_own", "result": "r"})

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("go"))
    kinds = [(e["type"], e.get("toolCallId")) for e in events[1:]]
    assert kinds == [
        ("TOOL_CALL_START", "call_own"), ("TOOL_CALL_ARGS", "call_own"),
        ("TOOL_CALL_END", "call_own"), ("TOOL_CALL_RESULT", "call_own"), ("RUN_FINISHED", None),
    ]  # fmt: skip


def test_id_less_chunk_after_text_continues_its_call_as_on_openai(serve: Any) -> None:
    """A chunk without an id continues the last call even when text closed it meanwhile: it
    was split in two (``{"q": `` under ``search``, then a nameless made-up call with the rest),
    so the official JS client held two broken calls where Chat Completions has one."""

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield E(T.TOOL_CALL_CHUNK, {"id": "call_i", "name": "search", "args_delta": '{"q": '})
        yield "while "
        yield E(T.TOOL_CALL_CHUNK, {"args_delta": '"cats"}'})
        yield E(T.REASONING, {"delta": "hm"})
        yield E(T.TOOL_CALL_CHUNK, {"id": None, "args_delta": " "})

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("go"))
        chat = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
        completion = chat.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}]
        )
    message = completion.choices[0].message
    assert client_arguments(events) == {"call_i": '{"q": "cats"} '}
    assert {(e["toolCallId"], e["toolCallName"]) for e in of_type(events, "TOOL_CALL_START")} == {
        ("call_i", "search")
    }
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()] == [
        ("call_i", "search", '{"q": "cats"} ')
    ]


def test_streamed_call_named_after_its_first_chunk_keeps_its_name() -> None:
    """1.0 names a call on its TOOL_CALL_START, and the client never renames an open call: a
    call streamed without a name is held until a chunk brings it (as OpenAI's client appends a
    late name), or started nameless when it ends without one."""
    events = encode_run([
        "Looking. ",
        E(T.TOOL_CALL_CHUNK, {"id": "a", "args_delta": '{"q":'}, addition={"timestamp": 1}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "name": "clock", "args_delta": "{}"}),
        E(T.TOOL_CALL_CHUNK, {"id": "a", "args_delta": '"x"'}),
        E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "search", "args_delta": "}"}),
        E(T.TOOL_CALL_CHUNK, {"id": "c", "args_delta": "{}"}),  # never named
        E(T.TOOL_RESULT, {"id": "a", "result": "found"}),
        E(T.TOOL_CALL_CHUNK, {"id": "d", "args_delta": "{}"}),
        E(T.TOOL_RESULT, {"id": "d", "name": "lookup", "result": "named by its result"}),
    ])  # fmt: skip
    starts = {e["toolCallId"]: e for e in of_type(events, "TOOL_CALL_START")}
    parent = events[1]["messageId"]
    assert starts == {
        "a": {"type": "TOOL_CALL_START", "toolCallId": "a", "toolCallName": "search",
              "parentMessageId": parent, "timestamp": 1},
        "b": {"type": "TOOL_CALL_START", "toolCallId": "b", "toolCallName": "clock",
              "parentMessageId": parent},
        "c": {"type": "TOOL_CALL_START", "toolCallId": "c", "toolCallName": "",
              "parentMessageId": parent},
        "d": {"type": "TOOL_CALL_START", "toolCallId": "d", "toolCallName": "lookup",
              "parentMessageId": starts["d"]["parentMessageId"]},
    }  # fmt: skip
    assert starts["d"]["parentMessageId"] not in (parent, starts["c"]["parentMessageId"])
    assert client_arguments(events) == {"a": '{"q":"x"}', "b": "{}", "c": "{}", "d": "{}"}
    kinds = [(e["type"], e.get("toolCallId")) for e in events]
    assert kinds.index(("TOOL_CALL_START", "b")) < kinds.index(("TOOL_CALL_START", "a"))


def test_result_for_unannounced_call_and_result_chunks() -> None:
    events = encode_run([
        E(T.TOOL_RESULT_CHUNK, {"id": "x", "delta": "part one, "}),
        E(T.TOOL_RESULT_CHUNK, {"id": "x", "delta": "part two, "}),
        E(T.TOOL_RESULT, {"id": "x", "name": "search", "result": "end"}),
        E(T.TOOL_RESULT_CHUNK, {"id": "y", "delta": "never finished"}),
    ])  # fmt: skip
    assert types(events)[1:] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END",
                                 "TOOL_CALL_RESULT", "TOOL_CALL_START", "TOOL_CALL_ARGS",
                                 "TOOL_CALL_END", "TOOL_CALL_RESULT", "RUN_FINISHED"]  # fmt: skip
    assert events[1]["toolCallName"] == "search"
    results = of_type(events, "TOOL_CALL_RESULT")
    assert [r["content"] for r in results] == ["part one, part two, end", "never finished"]
    assert results[0]["messageId"] != results[1]["messageId"]


def client_arguments(events: list[dict[str, Any]]) -> dict[str, str]:
    """Each call's ``function.arguments`` as the official client rebuilds it: the TOOL_CALL_ARGS
    deltas of its id, joined (a call with none keeps the "" its START gave it)."""
    calls: dict[str, str] = {}
    for e in events:
        if e["type"] == "TOOL_CALL_START":
            calls.setdefault(e["toolCallId"], "")
        elif e["type"] == "TOOL_CALL_ARGS":
            calls[e["toolCallId"]] += e["delta"]
    return calls


def test_tool_call_without_arguments_gets_an_empty_object() -> None:
    """A whole call with no arguments sends "{}", as the OpenAI protocols do: with no
    TOOL_CALL_ARGS the client keeps the call's arguments "", which ``JSON.parse`` (and every
    consumer that parses a history's arguments to send them to a model) rejects. The same for a
    call made up for a result; a streamed call that has its arguments gets nothing more."""
    events = encode_run([
        E(T.TOOL_CALL, {"id": "a", "name": "now"}),
        E(T.TOOL_CALL, {"id": "b", "name": "now", "args": ""}),
        E(T.TOOL_CALL, {"id": "c", "name": "now", "args": {}}),
        *AgentResponse(tool_calls=[ToolCall(id="d", name="now")]).to_events(),
        E(T.TOOL_RESULT, {"id": "e", "name": "now", "result": "made up"}),
        E(T.TOOL_RESULT_CHUNK, {"id": "f", "delta": "flushed at the end"}),
        E(T.TOOL_CALL_CHUNK, {"id": "g", "name": "f", "args_delta": '{"q":1}'}),
        E(T.TOOL_CALL, {"id": "g", "name": "f"}),  # ends the streamed call: no "{}" appended
        E(T.TOOL_CALL, {"id": "h", "name": "f", "args": '{"x":2}'}),
    ])  # fmt: skip
    calls = client_arguments(events)
    assert calls == {"a": "{}", "b": "{}", "c": "{}", "d": "{}", "e": "{}", "f": "{}",
                     "g": '{"q":1}', "h": '{"x":2}'}  # fmt: skip
    assert all(isinstance(orjson.loads(args), dict) for args in calls.values())


def test_empty_object_arguments_are_sent() -> None:
    """Arguments given as an empty dict are "{}" (as the OpenAI protocols send them), not
    dropped as no arguments; None is no arguments."""
    events = encode_run([
        E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "f", "args_delta": {}}),
        E(T.TOOL_CALL_CHUNK, {"id": "b", "name": "g", "args_delta": None}),
        E(T.TOOL_CALL, {"id": "c", "name": "h", "args": []}),
    ])
    assert client_arguments(events) == {"a": "{}", "b": "", "c": "[]"}


def test_buffered_result_chunks_are_sent_before_run_error() -> None:
    """Result chunks buffered when the run fails are still the tool's output: they go out as its
    result before RUN_ERROR, as they do before RUN_FINISHED, instead of being dropped."""
    for fail in ("event", "error()"):
        encoder = AGUIStreamEncoder("t", "r")
        out = encoder.start()
        out += encoder.encode(E(T.TOOL_CALL, {"id": "c", "name": "search", "args": "{}"}))
        out += encoder.encode(E(T.TOOL_RESULT_CHUNK, {"id": "c", "delta": "partial "}))
        out += encoder.encode(E(T.TOOL_RESULT_CHUNK, {"id": "c", "delta": "output"}))
        out += encoder.encode(E(T.TOOL_RESULT_CHUNK, {"id": "u", "delta": "unannounced"}))
        if fail == "event":
            out += encoder.encode(E(T.ERROR, {"message": "tool crashed"}))
        else:
            out += encoder.error("tool crashed")
        assert encoder.done
        events = verify(parse_sse(out))
        assert [(r["toolCallId"], r["content"]) for r in of_type(events, "TOOL_CALL_RESULT")] \
            == [("c", "partial output"), ("u", "unannounced")]  # fmt: skip
        assert events[-1] == {"type": "RUN_ERROR", "message": "tool crashed"}


def test_reasoning_then_text() -> None:
    events = encode_run([E(T.REASONING, {"delta": "Think"}), E(T.REASONING, {"delta": "ing."}),
                         E(T.REASONING, {"delta": ""}), "Answer."])  # fmt: skip
    assert types(events) == [
        "RUN_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END", "REASONING_END",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]  # fmt: skip
    assert events[2]["role"] == "reasoning"
    assert "".join(e["delta"] for e in of_type(events, "REASONING_MESSAGE_CONTENT")) == "Thinking."
    assert events[1]["messageId"] == events[6]["messageId"]
    assert events[2]["messageId"] == events[5]["messageId"] != events[1]["messageId"]


def test_text_then_reasoning_closes_the_text() -> None:
    events = encode_run(["a", E(T.REASONING, {"delta": "hm"}), "b"])
    assert types(events)[1:5] == ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                                  "TEXT_MESSAGE_END", "REASONING_START"]  # fmt: skip
    assert text_of(events) == ["a", "b"]


def test_state_custom_raw() -> None:
    patch = [{"op": "replace", "path": "/step", "value": 2}, {"op": "remove", "path": "/tmp"}]
    events = encode_run([
        E(T.STATE, {"snapshot": {"step": 1, "tmp": True}}),
        "working",
        E(T.STATE, {"delta": patch}),
        E(T.STATE, {"step": 3}),
        E(T.CUSTOM, {"name": "progress", "value": {"pct": 50}}),
        E(T.RAW, {"event": {"provider": "x"}, "source": "upstream"}),
        E(T.RAW, {"raw": 'data: {"type":"CUSTOM","name":"verbatim","value":1}'}),
        " still one message",
    ])  # fmt: skip
    assert of_type(events, "STATE_SNAPSHOT") == [
        {"type": "STATE_SNAPSHOT", "snapshot": {"step": 1, "tmp": True}},
        {"type": "STATE_SNAPSHOT", "snapshot": {"step": 3}},
    ]
    assert of_type(events, "STATE_DELTA") == [{"type": "STATE_DELTA", "delta": patch}]
    assert of_type(events, "CUSTOM") == [
        {"type": "CUSTOM", "name": "progress", "value": {"pct": 50}},
        {"type": "CUSTOM", "name": "verbatim", "value": 1},
    ]
    assert of_type(events, "RAW") == [
        {"type": "RAW", "event": {"provider": "x"}, "source": "upstream"}
    ]
    assert text_of(events) == ["working still one message"]


def test_raw_string_gets_its_blank_line() -> None:
    encoder = AGUIStreamEncoder("t", "r")
    encoder.start()
    assert encoder.encode(E(T.RAW, {"raw": "data: {}"})) == b"data: {}\n\n"
    assert encoder.encode(E(T.RAW, {"raw": "data: {}\n\n"})) == b"data: {}\n\n"


def test_error_event_ends_the_run() -> None:
    encoder = AGUIStreamEncoder("t", "r")
    out = encoder.start() + encoder.encode("partial")
    out += encoder.encode(E(T.ERROR, {"message": "model overloaded", "code": "overloaded"}))
    assert encoder.done
    assert encoder.encode("more") == b"" and encoder.close() == b"" and encoder.error("x") == b""
    events = verify(parse_sse(out))
    assert events[-1] == {"type": "RUN_ERROR", "message": "model overloaded", "code": "overloaded"}
    assert types(events)[-2] == "TEXT_MESSAGE_END"


def test_error_closes_open_tool_calls_and_reasoning() -> None:
    for opener in (E(T.REASONING, {"delta": "x"}),
                   E(T.TOOL_CALL_CHUNK, {"id": "a", "name": "f", "args_delta": "{"})):  # fmt: skip
        encoder = AGUIStreamEncoder("t", "r")
        events = verify(parse_sse(encoder.encode(opener) + encoder.error("boom")))
        assert events[-1] == {"type": "RUN_ERROR", "message": "boom"}


def test_hitl_interrupt_outcome() -> None:
    encoder = AGUIStreamEncoder("t", "r")
    out = encoder.encode("Need approval. ")
    out += encoder.encode(E(T.TOOL_CALL, {"id": "c", "name": "rm", "args": "{}"}))
    out += encoder.encode(E(T.HITL, {"id": "int-1", "type": "approval", "prompt": "Delete?",
                                     "tool_call_id": "c", "options": ["yes", "no"],
                                     "schema": {"type": "object"}}))  # fmt: skip
    assert encoder.done and encoder.close() == b""
    events = verify(parse_sse(out))
    assert events[-1] == {
        "type": "RUN_FINISHED", "threadId": "t", "runId": "r",
        "outcome": {"type": "interrupt", "interrupts": [
            {"id": "int-1", "reason": "approval", "message": "Delete?", "toolCallId": "c",
             "responseSchema": {"type": "object"}, "metadata": {"options": ["yes", "no"]}}]},
    }  # fmt: skip


def test_hitl_minimal_data_gets_id_and_reason() -> None:
    events = encode_run([E(T.HITL, {"schema": True})])
    (interrupt,) = events[-1]["outcome"]["interrupts"]
    assert set(interrupt) == {"id", "reason"} and interrupt["id"] and interrupt["reason"]


@pytest.mark.parametrize(
    ("usage", "want"),
    [
        ({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
         [{"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}]),
        ({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
          "completion_tokens_details": {"reasoning_tokens": 3},
          "prompt_tokens_details": {"cached_tokens": 2}},
         [{"inputTokens": 5, "outputTokens": 7, "totalTokens": 12, "reasoningTokens": 3,
           "cachedInputTokens": 2}]),
        ([{"inputTokens": 1, "outputTokens": 2, "model": "m"}, {"input_tokens": 3}],
         [{"model": "m", "inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
          {"inputTokens": 3}]),
        # A missing total is the sum (README, "Events"), as on the OpenAI protocols.
        ({"prompt_tokens": 5, "completion_tokens": 7},
         [{"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}]),
        ({"input_tokens": 5, "output_tokens": 7, "total_tokens": None},
         [{"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}]),
        ({"prompt_tokens": -1, "completion_tokens": True, "total_tokens": "9"}, None),
    ],
)  # fmt: skip
def test_usage_and_result_on_run_finished(usage: Any, want: Any) -> None:
    events = encode_run(["hi", E(T.TEXT, {"delta": "", "usage": usage, "result": {"ok": 1}})])
    finished = events[-1]
    assert finished.get("usage") == want
    assert finished["result"] == {"ok": 1}


def test_null_usage_keeps_the_usage_given_before() -> None:
    """``usage: None`` on a later event is no usage given (as on the OpenAI protocols): the run
    still reports the last real one."""
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    events = encode_run([E(T.TEXT, {"delta": "a", "usage": usage}),
                         E(T.TEXT, {"delta": "b", "usage": None})])  # fmt: skip
    assert events[-1]["usage"] == [{"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}]


def test_usage_from_agent_response_and_tool_result_is_not_the_run_result() -> None:
    response = AgentResponse(content="hi", usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                  "total_tokens": 3})  # fmt: skip
    events = encode_run([*response.to_events(), E(T.TOOL_RESULT, {"id": "c", "result": "tool"})])
    usage = [{"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}]
    assert events[-1] == {"type": "RUN_FINISHED", "threadId": "t", "runId": "r", "usage": usage}


def test_addition_is_merged_into_the_event() -> None:
    events = encode_run([
        E(T.TEXT, {"delta": "a"}, addition={"timestamp": 1}),
        E(T.TOOL_CALL, {"id": "c", "name": "f", "args": "{}"}, addition={"metadata": {"k": 1}}),
        E(T.CUSTOM, {"name": "n", "value": 1}, addition={"timestamp": 2}),
        E(T.REASONING, {"delta": "r"}, addition={"timestamp": 3}),
    ])  # fmt: skip
    assert of_type(events, "TEXT_MESSAGE_CONTENT")[0]["timestamp"] == 1
    assert of_type(events, "TOOL_CALL_START")[0]["metadata"] == {"k": 1}
    assert "metadata" not in of_type(events, "TOOL_CALL_ARGS")[0]
    assert of_type(events, "CUSTOM")[0]["timestamp"] == 2
    assert of_type(events, "REASONING_MESSAGE_CONTENT")[0]["timestamp"] == 3


def test_fast_path_matches_event_path() -> None:
    a, b = AGUIStreamEncoder("t", "r"), AGUIStreamEncoder("t", "r")
    a.encode("x"), b.encode(E(T.TEXT, {"delta": "x"}))
    assert a.encode('q"\n') == b.encode(E(T.TEXT, {"delta": 'q"\n'})).replace(
        b._text_id.encode(), a._text_id.encode()
    )


@pytest.mark.parametrize(
    "bad",
    [
        E(T.TOOL_CALL, {"id": "c", "name": "f", "args": {"not json": {1, 2}}}),
        E(T.TOOL_CALL_CHUNK, {"id": "c", "name": "f", "args_delta": object()}),
        E(T.TOOL_RESULT, {"id": "c", "result": {1}}),
        E(T.TOOL_RESULT_CHUNK, {"id": "c", "delta": object()}),
        E(T.REASONING, {"delta": {"a": object()}}),
        E(T.TEXT, {"delta": "x"}, addition={"bad": object()}),
        E(T.CUSTOM, {"name": "n", "value": object()}),
        E(T.STATE, {"snapshot": {1, 2}}),
        # 1.0 clients kill the run on a STATE_DELTA whose delta is not an RFC 6902 list
        E(T.STATE, {"delta": {"op": "replace", "path": "/a", "value": 1}}),
        E(T.STATE, {"delta": [{"op": "replace", "value": 1}]}),
        E(T.STATE, {"delta": [{"op": "merge", "path": "/a"}]}),
        E(T.HITL, {"id": "h", "schema": {"x": object()}}),
        E(T.TEXT, {"delta": "", "result": object()}),  # fails later, in close()
    ],
)  # fmt: skip
def test_unsendable_item_leaves_a_valid_run(bad: AgentEvent) -> None:
    """``run_stream`` answers an encode/close failure with ``error()``: still a valid run."""
    encoder = AGUIStreamEncoder("t", "r")
    out = encoder.start() + encoder.encode("open text ")
    failed = False
    try:
        out += encoder.encode(bad)
        out += encoder.close()
    except (TypeError, orjson.JSONEncodeError):
        failed = True
        out += encoder.error("the agent emitted an item that cannot be sent")
    assert failed
    events = verify(parse_sse(out))
    assert events[-1]["type"] == "RUN_ERROR"
    assert text_of(events) == ["open text "]


_PALETTE = [
    lambda r: "t" * r.randint(0, 2),
    lambda r: E(T.TEXT, {"delta": r.choice(["", "x", "yz"])}),
    lambda r: E(T.REASONING, {"delta": r.choice(["", "think"])}),
    lambda r: E(T.TOOL_CALL, {"id": r.choice(["a", "b", "c", None]), "name": "f", "args": "{}"}),
    lambda r: E(
        T.TOOL_CALL_CHUNK,
        {"id": r.choice(["a", "b", "c"]), "name": "f", "args_delta": r.choice(["", "{", "}"])},
    ),
    lambda r: E(T.TOOL_CALL_CHUNK, {"args_delta": "x"}),
    lambda r: E(
        T.TOOL_RESULT, {"id": r.choice(["a", "b", "c", "zz"]), "result": r.choice(["", 1])}
    ),
    lambda r: E(T.TOOL_RESULT_CHUNK, {"id": r.choice(["a", "b"]), "delta": "p"}),
    lambda r: E(T.STATE, {"snapshot": {"n": r.randint(0, 9)}}),
    lambda r: E(T.CUSTOM, {"name": "c", "value": None}),
    lambda r: E(T.RAW, {"event": "e"}),
    lambda r: E(
        T.TEXT,
        {"delta": "", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    ),
    lambda r: E(T.ERROR, {"message": "bad"}) if r.random() < 0.2 else "u",
    lambda r: E(T.HITL, {"id": "h", "type": "approval"}) if r.random() < 0.2 else "v",
]


@pytest.mark.parametrize("seed", range(300))
def test_any_event_sequence_gives_a_valid_run(seed: int) -> None:
    rnd = random.Random(seed)
    items = [rnd.choice(_PALETTE)(rnd) for _ in range(rnd.randint(0, 25))]
    encoder = AGUIStreamEncoder("t", "r")
    out = b""
    for item in items:
        out += encoder.encode(item)
        if encoder.done:
            break
    out += encoder.error("crash") if seed % 5 == 0 else encoder.close()
    verify(parse_sse(out))


# -- end to end: a real uvicorn ----------------------------------------------------------------


def test_one_text_run_and_request_fields(serve: Any) -> None:
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "Hello from AG-UI"

    body = {
        "threadId": "th", "runId": "ru", "parentRunId": "pa", "state": {"count": 1},
        "messages": [
            {"id": "s", "role": "system", "content": "be brief"},
            {"id": "d", "role": "developer", "content": "dev"},
            {"id": "u", "role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "url", "value": "http://x"}}]},
            {"id": "a", "role": "assistant", "content": None,
             "toolCalls": [{"id": "c1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"id": "t", "role": "tool", "content": "42", "toolCallId": "c1"},
            {"id": "t2", "role": "tool", "content": "", "toolCallId": "c2", "error": "no network"},
            {"id": "rz", "role": "reasoning", "content": "earlier thoughts"},
            {"role": "user", "content": "again"},
        ],
        "tools": [{"name": "f", "description": "does f", "parameters": {"type": "object"}}],
        "context": [{"description": "tz", "value": "UTC"}],
        "forwardedProps": {"mode": "fast"},
        "custom_field": [1, 2],
    }  # fmt: skip
    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, body)
    assert types(events) == ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_END", "RUN_FINISHED"]  # fmt: skip
    assert events[0] == {"type": "RUN_STARTED", "threadId": "th", "runId": "ru",
                         "protocolVersion": "1.0", "parentRunId": "pa"}  # fmt: skip
    assert text_of(events) == ["Hello from AG-UI"]
    (request,) = seen
    assert request.protocol == "agui" and request.stream
    assert (request.thread_id, request.run_id, request.parent_run_id) == ("th", "ru", "pa")
    assert request.state == {"count": 1} and request.forwarded_props == {"mode": "fast"}
    assert request.context == [{"description": "tz", "value": "UTC"}]
    assert request.extra == {"custom_field": [1, 2]} and request.resume is None
    roles = [m.role for m in request.messages]
    assert roles == [MessageRole.SYSTEM, MessageRole.DEVELOPER, MessageRole.USER,
                     MessageRole.ASSISTANT, MessageRole.TOOL, MessageRole.TOOL,
                     MessageRole.USER]  # fmt: skip
    assert request.messages[2].text == "hi" and request.messages[2].id == "u"
    call = request.messages[3].tool_calls[0]  # type: ignore[index]
    assert (call.id, call.name, call.arguments) == ("c1", "f", '{"x":1}')
    assert request.messages[4].tool_call_id == "c1" and request.messages[4].error is None
    assert (request.messages[5].tool_call_id, request.messages[5].error) == ("c2", "no network")
    assert request.messages[6].id is None
    assert request.last_user_message.text == "again"  # type: ignore[union-attr]
    (tool,) = request.tools  # type: ignore[misc]
    assert (tool.name, tool.description, tool.parameters) == ("f", "does f", {"type": "object"})
    assert request.raw_request is not None and request.raw_request.url.path == "/ag-ui/agent"


def test_missing_ids_are_generated(serve: Any) -> None:
    seen: list[AgentRequest] = []

    def agent(request: AgentRequest) -> str:
        seen.append(request)
        return "ok"

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, {"messages": [{"role": "user", "content": "x"}]})
        other = post_run(base, {})
    assert events[0]["threadId"] == seen[0].thread_id and events[0]["runId"] == seen[0].run_id
    assert seen[0].run_id and seen[0].run_id != seen[1].run_id and seen[1].messages == []
    assert other[-1]["runId"] == seen[1].run_id


def test_text_tool_call_text_over_http(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield "Checking. "
        yield E(T.TOOL_CALL, {"id": "call_9", "name": "clock", "args": '{"tz":"UTC"}'})
        yield E(T.TOOL_RESULT, {"id": "call_9", "result": "12:00"})
        yield "It is 12:00."

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("time?"))
    assert text_of(events) == ["Checking. ", "It is 12:00."]
    assert of_type(events, "TOOL_CALL_RESULT")[0]["content"] == "12:00"


def test_interleaved_tool_call_chunks_over_http(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        for call_id, name, part in (("a", "f", '{"n":'), ("b", "g", '{"m":'), ("a", None, "1}"),
                                    ("b", None, "2}")):  # fmt: skip
            yield E(T.TOOL_CALL_CHUNK, {"id": call_id, "name": name, "args_delta": part})
            await asyncio.sleep(0)

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("go"))
    assert types(events)[1:-1] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_START",
                                   "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS",
                                   "TOOL_CALL_END", "TOOL_CALL_END"]  # fmt: skip


def test_reasoning_state_custom_raw_over_http(serve: Any) -> None:
    def agent(request: AgentRequest) -> Iterator[Any]:  # a sync generator
        yield E(T.REASONING, {"delta": "hmm"})
        yield E(T.STATE, {"snapshot": {"a": 1}})
        yield E(T.STATE, {"delta": [{"op": "add", "path": "/b", "value": 2}]})
        yield E(T.CUSTOM, {"name": "ping", "value": [1]})
        yield E(T.RAW, {"raw": 'data: {"type":"CUSTOM","name":"raw","value":true}'})
        yield "done"

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("x"))
    assert types(events) == [
        "RUN_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
        "STATE_SNAPSHOT", "STATE_DELTA", "CUSTOM", "CUSTOM", "REASONING_MESSAGE_END",
        "REASONING_END", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]  # fmt: skip


def test_agent_raising_mid_stream_gives_run_error(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        yield "partial "
        raise ValueError("database unreachable")

    with serve(AgentRunServer(agent)) as base:
        response = httpx.post(base + "/ag-ui/agent", json=user("x"), timeout=10)
    events = verify(parse_sse(response.content))
    assert events[-1] == {"type": "RUN_ERROR", "message": "database unreachable"}
    assert b"Traceback" not in response.content and b"ValueError" not in response.content
    assert text_of(events) == ["partial "]


def test_agent_raising_before_anything_gives_run_error(serve: Any) -> None:
    def agent(request: AgentRequest) -> str:
        raise RuntimeError("no model configured")

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("x"))
    assert types(events) == ["RUN_STARTED", "RUN_ERROR"]
    assert events[-1]["message"] == "no model configured"


def test_error_event_over_http(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield E(T.ERROR, {"message": "quota exceeded", "code": "quota"})
        yield "never sent"

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("x"))
    assert types(events) == ["RUN_STARTED", "RUN_ERROR"] and events[-1]["code"] == "quota"


def test_hitl_interrupt_and_resume_round_trip(serve: Any) -> None:
    resumes: list[Any] = []

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        resumes.append(request.resume)
        if not request.resume:
            yield "I need your OK. "
            yield E(T.HITL, {"id": "ok-1", "type": "confirmation", "prompt": "Proceed?"})
            yield "never sent"
            return
        (entry,) = request.resume
        yield f"Resumed with {entry['status']}: {entry['payload']['answer']}"

    with serve(AgentRunServer(agent)) as base:
        first = post_run(base, user("go"))
        outcome = first[-1]["outcome"]
        assert outcome == {"type": "interrupt", "interrupts": [
            {"id": "ok-1", "reason": "confirmation", "message": "Proceed?"}]}  # fmt: skip
        resume = [{"interruptId": "ok-1", "status": "resolved", "payload": {"answer": "yes"}}]
        second = post_run(base, user("go", runId="run-2", resume=resume))
    assert text_of(first) == ["I need your OK. "]
    assert "outcome" not in second[-1] and second[-1]["runId"] == "run-2"
    assert text_of(second) == ["Resumed with resolved: yes"]
    assert resumes == [None, resume]


def test_usage_and_result_over_http(serve: Any) -> None:
    def agent(request: AgentRequest) -> AgentResponse:
        return AgentResponse(content="answer", usage={"prompt_tokens": 3, "completion_tokens": 4,
                                                      "total_tokens": 7})  # fmt: skip

    async def agent_with_result(request: AgentRequest) -> AsyncIterator[Any]:
        yield "x"
        yield E(T.CUSTOM, {"name": "done", "value": None, "result": {"score": 0.9}})

    with serve(AgentRunServer(agent)) as base:
        events = post_run(base, user("x"))
    assert events[-1]["usage"] == [{"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}]
    assert "result" not in events[-1]
    with serve(AgentRunServer(agent_with_result)) as base:
        events = post_run(base, user("x"))
    assert events[-1]["result"] == {"score": 0.9} and "usage" not in events[-1]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"text"', None),
        ({"messages": {"role": "user"}}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": "x", "id": 7}]}, "messages[0].id"),
        ({"messages": [{"role": "assistant", "toolCalls": {}}]}, "messages[0].toolCalls"),
        ({"messages": [{"role": "assistant", "toolCalls": [1]}]}, "messages[0].toolCalls[0]"),
        ({"messages": [{"role": "tool", "content": "x", "toolCallId": 1}]},
         "messages[0].toolCallId"),
        ({"threadId": 12}, "threadId"),
        ({"runId": ["r"]}, "runId"),
        ({"parentRunId": {}}, "parentRunId"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"tools": [{"description": "no name"}]}, "tools[0].name"),
        ({"tools": [{"name": 3}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
        ({"tools": [{"function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"tools": [{"function": {"name": "f", "description": 1}}]},
         "tools[0].function.description"),
        ({"messages": [{"role": "tool", "content": "", "toolCallId": "c", "error": {"x": 1}}]},
         "messages[0].error"),
        ({"context": "ctx"}, "context"),
        ({"context": ["ctx"]}, "context[0]"),
        ({"context": [{"description": "tz", "value": {"zone": "UTC"}}]}, "context[0].value"),
        ({"context": [{"description": 1, "value": "UTC"}]}, "context[0].description"),
        ({"resume": {"interruptId": "i"}}, "resume"),
        ({"resume": [{"interruptId": 1, "status": "resolved"}]}, "resume[0].interruptId"),
        ({"resume": ["i"]}, "resume[0]"),
        ({"resume": [{"interruptId": "i", "status": "approved"}]}, "resume[0].status"),
    ],
)  # fmt: skip
def test_bad_input_is_a_json_error_before_any_stream(
    serve: Any, body: Any, param: str | None
) -> None:
    called: list[bool] = []

    def agent(request: AgentRequest) -> str:
        called.append(True)
        return "no"

    content = body if isinstance(body, bytes) else orjson.dumps(body)
    with serve(AgentRunServer(agent)) as base:
        response = httpx.post(base + "/ag-ui/agent", content=content,
                              headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert not called


def test_wrong_method_and_non_sse_accept(serve: Any) -> None:
    with serve(AgentRunServer(lambda request: "hi")) as base:
        response = httpx.get(base + "/ag-ui/agent", timeout=10)
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        # The protobuf media type is answered with SSE, which every AG-UI client reads.
        events = post_run(base, user("x"),
                          headers={"accept": "application/vnd.ag-ui.event+proto"})  # fmt: skip
        assert text_of(events) == ["hi"]
        events = post_run(base, user("x"), headers={"accept": "application/json"})
        assert text_of(events) == ["hi"]


def test_run_started_goes_out_before_the_agent_yields(serve: Any) -> None:
    seen_start = threading.Event()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        # Wait (bounded) until the client has read RUN_STARTED: it must not wait for us.
        got = await anyio.to_thread.run_sync(seen_start.wait, 5)
        yield f"client saw RUN_STARTED first: {got}"

    with serve(AgentRunServer(agent)) as base:
        with httpx.stream("POST", base + "/ag-ui/agent", json=user("x"), timeout=10) as response:
            chunks = response.iter_bytes()
            body = b""
            while b"\n\n" not in body:
                body += next(chunks)
            assert orjson.loads(body.split(b"\n\n")[0][6:])["type"] == "RUN_STARTED"
            seen_start.set()
            body += b"".join(chunks)
    assert text_of(verify(parse_sse(body))) == ["client saw RUN_STARTED first: True"]


def test_client_disconnect_closes_the_agent(serve: Any) -> None:
    closed = threading.Event()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        try:
            for i in range(10_000):
                yield f"{i} "
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    with serve(AgentRunServer(agent)) as base:
        with httpx.stream("POST", base + "/ag-ui/agent", json=user("x"), timeout=10) as response:
            next(response.iter_bytes())
        assert closed.wait(5)


@pytest.mark.parametrize("kind", ["sync_function", "async_function", "sync_generator",
                                  "async_generator"])  # fmt: skip
def test_every_agent_shape(serve: Any, kind: str) -> None:
    def sync_function(request: AgentRequest) -> list[Any]:
        return ["a", "b", E(T.TOOL_CALL, {"id": "c", "name": "f", "args": "{}"})]

    async def async_function(request: AgentRequest) -> list[Any]:
        return sync_function(request)

    def sync_generator(request: AgentRequest) -> Iterator[Any]:
        yield "a"
        time.sleep(0.001)
        yield "b"
        yield E(T.TOOL_CALL, {"id": "c", "name": "f", "args": "{}"})

    async def async_generator(request: AgentRequest) -> AsyncIterator[Any]:
        for item in sync_function(request):
            yield item

    agents = {f.__name__: f for f in (sync_function, async_function, sync_generator,
                                      async_generator)}  # fmt: skip
    with serve(AgentRunServer(agents[kind])) as base:
        events = post_run(base, user("x"))
    assert text_of(events) == ["ab"]
    assert types(events)[5:-1] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]


def test_one_agent_answers_openai_and_agui_on_one_server(serve: Any) -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield E(T.REASONING, {"delta": "thinking"})
        yield f"[{request.protocol}] you said {request.last_user_message.text}"  # type: ignore[union-attr]

    server = AgentRunServer(agent)
    assert isinstance(server.protocols[0], OpenAIProtocolHandler)
    assert isinstance(server.protocols[1], AGUIProtocolHandler)
    with serve(server) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(
            model="agentrun", messages=[{"role": "user", "content": "hello"}]
        )
        stream = client.chat.completions.create(
            model="agentrun", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        events = post_run(base, user("hello"))
    assert completion.choices[0].message.content == "[openai] you said hello"
    assert streamed == "[openai] you said hello"
    assert text_of(events) == ["[agui] you said hello"]
    assert types(events)[1] == "REASONING_START"


def test_prefix_override_moves_the_route(serve: Any) -> None:
    server = AgentRunServer(lambda r: "moved", protocols=[AGUIProtocolHandler()],
                            prefix_overrides={"AGUIProtocolHandler": "/agents/main"})  # fmt: skip
    with serve(server) as base:
        response = httpx.post(base + "/agents/main", json=user("x"), timeout=10)
        assert httpx.post(base + "/ag-ui/agent", json=user("x"), timeout=10).status_code == 404
    assert text_of(verify(parse_sse(response.content))) == ["moved"]


def test_default_app_serves_the_demo_over_agui(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTRUN_AGENT", raising=False)
    monkeypatch.setattr("agentrun_asgi.demo.DELAY", 0)
    from agentrun_asgi.loader import default_app

    with serve(default_app()) as base:
        events = post_run(base, user("hi there"))
    kinds = types(events)
    assert kinds.index("REASONING_END") < kinds.index("TOOL_CALL_START") < kinds.index(
        "TOOL_CALL_RESULT") < kinds.index("TEXT_MESSAGE_START")  # fmt: skip
    assert of_type(events, "TOOL_CALL_START")[0]["toolCallName"] == "get_time"
    assert text_of(events)[0].startswith("Hello! You said: 'hi there'.")


def test_hitl_example_round_trip(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "agui_hitl_example", ROOT / "examples" / "agui_hitl.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with serve(example.app) as base:
        first, second = example.run_client(base, approve=True)
        _, refused = example.run_client(base, approve=False)
    for run in (first, second, refused):
        verify(run)
    (interrupt,) = first[-1]["outcome"]["interrupts"]
    assert interrupt["id"] == "approval-t1" and interrupt["reason"] == "approval"
    assert interrupt["responseSchema"] == example.APPROVAL_SCHEMA
    assert text_of(second) == ["Approved, so I did it: delete the draft."]
    assert text_of(refused) == ["Not approved: I left everything as it was."]
    # Shared state: a snapshot before the interrupt, a JSON Patch delta after the answer.
    (snapshot,) = [e for e in first if e["type"] == "STATE_SNAPSHOT"]
    assert snapshot["snapshot"] == {"task": "delete the draft", "status": "awaiting"}
    for run, status in ((second, "done"), (refused, "refused")):
        (delta,) = [e for e in run if e["type"] == "STATE_DELTA"]
        assert delta["delta"] == [{"op": "replace", "path": "/status", "value": status}]
    assert "run 1 asks: May I delete the draft?" in capsys.readouterr().out
