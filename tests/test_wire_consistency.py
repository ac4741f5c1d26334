"""One agent, one answer, whatever the wire: random agent output through every protocol and form.

Hypothesis generates sequences of what an agent yields (README, "Events"): bare text (empty
strings too), TEXT, REASONING, TOOL_CALL (with or without id and name; arguments as a string, a
dict, empty, null or missing), TOOL_CALL_CHUNK (id on the first chunk, on every chunk, or never;
the name late or never; ``args_delta`` a string or a dict), TOOL_RESULT / TOOL_RESULT_CHUNK,
STATE, CUSTOM, ``usage`` and ``finish_reason`` on any event's data, the occasional ``addition``,
whole answers (``AgentResponse`` or its dict, with ``events`` too), and at most one ERROR (also
inside a whole answer, with content after it). Each sequence goes through the sans-IO encoders
driven by the real stream writer (``streaming._pump``) and through the collectors (the bulk of
the examples: fast, no server), then a few fixed ones through a real uvicorn and the official
``openai`` client (end of the module). ``WIRE_EXAMPLES=5000`` runs a longer hunt.

Checks:

1. Chat Completions: the SSE stream, parsed chunk by chunk with the client's types and
   accumulated by the client's own ``ChatCompletionStreamState``, gives the JSON collector's
   ``chat.completion``: content, ``reasoning_content``, tool calls (id, name, arguments, in
   order), ``finish_reason`` and, with ``include_usage``, usage.
2. Responses: the stream (every event valid for the client's types, ``sequence_number`` from 0
   with no gap, each item's added/deltas/done consistent) ends with the JSON collector's output,
   and the client's ``ResponseStreamState`` takes every event and completes with that output.
3. AG-UI: the run passes ``agui_verify`` (the 1.0 models and the order rules), and its text,
   reasoning, tool calls and usage are the Chat JSON form's.
4. Every frame is valid SSE and JSON; each stream ends exactly once; an ERROR ends every form
   with its message (JSON: the collector's error, which the handler sends as a 500).

"Same" allows only these differences, each a documented design choice:

- Made-up ids (a call without one) are random per run, so they are compared as "made up", not
  by value; item and message ids are ignored.
- Empty content is ``null`` in one form and ``""`` (or absent) in another (a Chat message with
  tool calls and no text has ``content: null``; a stream that sent no text has no content).
- Chat Completions only: a Chat message has no place for TOOL_RESULT(_CHUNK), STATE, CUSTOM
  (README "Events": "not sent").
- Responses: "arguments for a call already done are dropped, in the JSON form too" (responses.py
  docstring, README "OpenAI Responses API": a call's item stays open until its TOOL_CALL or
  TOOL_RESULT), while Chat appends them to the call. Responses is compared with Chat only for
  runs that never touch a call after it is done. ``finish_reason`` shows as the status
  (``length``/``content_filter`` -> ``incomplete``); usage has Responses' shape.
- AG-UI: a result for a call never announced makes up its START/ARGS/END (agui.py docstring);
  a call started without a name keeps "" (1.0 names a call on START only, and a reopened call
  repeats its first START). AG-UI is compared with Chat on tool calls only for runs where none
  of these applies; text and reasoning always. AG-UI has no place for ``finish_reason``; its
  calls are compared as a set (a call held for its name starts after a named one that came later).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import ContentFilterFinishReasonError, LengthFinishReasonError
from openai._models import construct_type
from openai._types import omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import parse_sse, verify
from responses_events import check_items, parse_events
from test_agui import post_run
from test_agui import user as agui_input

from agentrun_asgi import AgentEvent, AgentResponse, EventType, ToolCall
from agentrun_asgi.invoker import expand
from agentrun_asgi.protocols.agui import AGUIStreamEncoder
from agentrun_asgi.protocols.openai import ChatCompletionCollector, ChatStreamEncoder
from agentrun_asgi.protocols.responses import (
    ResponseCollector,
    ResponsesStreamEncoder,
    response_base,
)
from agentrun_asgi.requests import Request
from agentrun_asgi.streaming import _pump

T = EventType
E = AgentEvent
GIVEN_IDS = ("call_a", "call_b", "call_c")
MADE_UP = "*"
RESPONSE = TypeAdapter(Response)
#: The request ``_pump`` checks for a stopped run (none here).
REQUEST = Request({"type": "http", "headers": []}, receive=None)  # type: ignore[arg-type]
EXAMPLES = int(os.environ.get("WIRE_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# -- the agent's output ------------------------------------------------------------------------

_MISSING: Any = object()
texts = st.text(alphabet='ab "{}\n\\é😀', max_size=4)
arg_strings = st.sampled_from(["", "{", "}", '{"x":1}', '"a', 'b"', "[1]", " "])
arg_dicts = st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 3), max_size=2)
call_ids = st.sampled_from([*GIVEN_IDS, _MISSING, None, ""])
names = st.sampled_from(["f", "g", _MISSING, None, ""])
usages = st.one_of(
    st.none(),
    st.builds(lambda p, c: {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
              st.integers(0, 9), st.integers(0, 9)),
    st.builds(lambda p, c: {"prompt_tokens": p, "completion_tokens": c},
              st.integers(0, 9), st.integers(0, 9)),
    st.builds(lambda p, c: {"input_tokens": p, "output_tokens": c},
              st.integers(0, 9), st.integers(0, 9)),
)  # fmt: skip
finish_reasons = st.sampled_from(["stop", "length", "tool_calls", "content_filter", None])
additions = st.one_of(st.none(), st.builds(lambda n: {"timestamp": n}, st.integers(0, 9)))


def _data(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not _MISSING}


@st.composite
def events(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["str", "TEXT", "REASONING", "TOOL_CALL", "TOOL_CALL_CHUNK",
                                 "TOOL_CALL_CHUNK", "TOOL_RESULT", "TOOL_RESULT_CHUNK", "STATE",
                                 "CUSTOM"]))  # fmt: skip
    if kind == "str":
        return draw(texts)
    if kind in ("TEXT", "REASONING"):
        data = {"delta": draw(texts)}
    elif kind == "TOOL_CALL":
        args = draw(st.one_of(arg_strings, arg_dicts, st.sampled_from([_MISSING, None])))
        data = _data(id=draw(call_ids), name=draw(names), args=args)
    elif kind == "TOOL_CALL_CHUNK":
        chunk_id = draw(st.sampled_from([*GIVEN_IDS, _MISSING, None, ""]))
        args = draw(st.one_of(arg_strings, arg_dicts, st.sampled_from([_MISSING, None])))
        data = _data(id=chunk_id, name=draw(names), args_delta=args)
    elif kind == "TOOL_RESULT":
        result = draw(st.one_of(texts, arg_dicts))
        data = _data(id=draw(st.sampled_from([*GIVEN_IDS, _MISSING])), result=result)
    elif kind == "TOOL_RESULT_CHUNK":
        data = _data(id=draw(st.sampled_from([*GIVEN_IDS, _MISSING])), delta=draw(texts))
    elif kind == "STATE":
        data = draw(st.sampled_from([{"snapshot": {"n": 1}},
                                     {"delta": [{"op": "add", "path": "/n", "value": 2}]}]))
    else:
        data = {"name": "progress", "value": draw(st.one_of(st.none(), st.integers(0, 3)))}
    if draw(st.integers(0, 5)) == 0:
        data["usage"] = draw(usages)
    if draw(st.integers(0, 7)) == 0:
        data["finish_reason"] = draw(finish_reasons)
    addition = draw(additions) if draw(st.integers(0, 5)) == 0 else None
    return E(T[kind], data, addition)


@st.composite
def whole_answers(draw: st.DrawFn) -> Any:
    """An ``AgentResponse`` (or the same as a dict) yielded among the events."""
    calls = draw(st.lists(st.one_of(
        st.builds(ToolCall, st.sampled_from(GIVEN_IDS), st.sampled_from(["f", "g"]),
                  arg_strings),
        st.builds(lambda i, n, a: {"id": i, "function": {"name": n, "arguments": a}},
                  st.sampled_from([*GIVEN_IDS, None]), st.sampled_from(["f", "g"]),
                  st.one_of(arg_strings, arg_dicts, st.none())),
    ), max_size=2))  # fmt: skip
    fields = {"content": draw(st.one_of(st.none(), texts)),
              "reasoning_content": draw(st.one_of(st.none(), texts)),
              "tool_calls": calls or None, "usage": draw(usages),
              "finish_reason": draw(finish_reasons),
              "events": draw(st.one_of(st.none(), st.lists(events(), max_size=3)))}  # fmt: skip
    return AgentResponse(**fields) if draw(st.booleans()) else fields


@st.composite
def runs(draw: st.DrawFn, error: bool | None = None) -> list[Any]:
    """An agent's output; with at most one ERROR (``error``: always, never, or either)."""
    items: list[Any] = draw(st.lists(st.one_of(events(), events(), events(), whole_answers()),
                                     max_size=14))  # fmt: skip
    if error is None:
        error = draw(st.integers(0, 4)) == 0
    if error:
        data = _data(message=draw(st.sampled_from(["boom", "quota exceeded"])),
                     code=draw(st.sampled_from([_MISSING, None, "agent_error"])))  # fmt: skip
        if draw(st.booleans()):
            data["usage"] = draw(usages)
        error_event = E(T.ERROR, data)
        if draw(st.booleans()):  # inside a whole answer, with more after it
            error_event = AgentResponse(content="after", events=[error_event])  # type: ignore[assignment]
        items.insert(draw(st.integers(0, len(items))), error_event)
    return items


def fresh(items: list[Any]) -> list[Any]:
    """A copy for one consumer: no encoder may see what another did to an event."""
    return copy.deepcopy(items)


def flat(items: list[Any]) -> list[Any]:
    """The stream items the agent's output stands for (an ``AgentResponse`` is its events)."""
    return [one for item in fresh(items) for one in expand(item)]


def error_of(items: list[Any]) -> tuple[str, Any] | None:
    for item in flat(items):
        if isinstance(item, AgentEvent) and item.event == T.ERROR:
            return item.data["message"], item.data.get("code")
    return None


def drive(encoder: Any, items: list[Any]) -> bytes:
    """What ``streaming.run_stream`` sends: ``start()``, then the stream writer itself
    (``_pump``: each item until one ends the stream, then ``close()``)."""
    start = getattr(encoder, "start", None)
    sent = [start() if start is not None else b""]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["body"])

    async def agent() -> AsyncIterator[Any]:
        for item in fresh(items):
            yield item

    anyio.run(_pump, send, agent(), encoder, REQUEST)
    return b"".join(sent)


def mask(call_id: str) -> str:
    return call_id if call_id in GIVEN_IDS else MADE_UP


# -- Chat Completions --------------------------------------------------------------------------


def chat_stream(items: list[Any], include_usage: bool) -> tuple[Any, dict[str, Any] | None,
                                                                 list[dict[str, Any]]]:  # fmt: skip
    """The stream as the official client reads it: (its accumulated completion, the error
    frame if one ended the stream, the raw chunks)."""
    body = drive(ChatStreamEncoder("chatcmpl-1", 0, "m", include_usage), items)
    assert body.endswith(b"\n\n")
    frames = body.split(b"\n\n")[:-1]
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks: list[dict[str, Any]] = []
    for i, frame in enumerate(frames):
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame
        last = i == len(frames) - 1
        if frame == b"data: [DONE]":
            assert last, "[DONE] before the end"
            return final_completion(state), None, chunks
        data = orjson.loads(frame[6:])
        if "error" in data:  # the client raises APIError on it: the stream ends there
            assert last, "frames after the error frame"
            return (final_completion(state) if chunks else None), data["error"], chunks
        chunk = ChatCompletionChunk.model_validate(data)
        chunks.append(data)
        state.handle_chunk(chunk)
    raise AssertionError("the stream ends with neither [DONE] nor an error frame")


def final_completion(state: ChatCompletionStreamState[Any]) -> Any:
    """The client's final completion; its parse helper raises on ``length`` and
    ``content_filter`` with the completion attached, which is what it accumulated."""
    try:
        return state.get_final_completion()
    except (LengthFinishReasonError, ContentFilterFinishReasonError) as exc:
        return exc.completion


def chat_json(items: list[Any]) -> tuple[dict[str, Any] | None, tuple[str, Any] | None]:
    """The JSON form: the ``chat.completion`` body, or the error the handler sends as a 500."""
    collector = ChatCompletionCollector()
    collector.add_all(fresh(items))
    if collector.error is not None:
        return None, collector.error
    body = collector.body("chatcmpl-1", 0, "m")
    ChatCompletion.model_validate(body)
    orjson.loads(orjson.dumps(body))
    return body, None


def chat_calls(calls: list[Any]) -> list[tuple[str, str, str]]:
    out = []
    for call in calls or ():
        if isinstance(call, dict):
            function = call["function"]
            out.append((mask(call["id"]), function["name"], function["arguments"]))
        else:
            out.append((mask(call.id), call.function.name, call.function.arguments))
    return out


@SETTINGS
@given(runs(), st.booleans())
def test_chat_stream_accumulates_to_the_json_completion(items: list[Any], usage: bool) -> None:
    streamed, error_frame, chunks = chat_stream(items, usage)
    body, error = chat_json(items)
    assert error_of(items) == error
    if error is not None:
        assert error_frame is not None, "an ERROR must end the stream with an error frame"
        assert (error_frame["message"], error_frame["code"]) == error
        return
    assert error_frame is None and body is not None
    message = body["choices"][0]["message"]
    got = streamed.choices[0].message
    assert (got.content or "") == (message["content"] or "")
    assert (getattr(got, "reasoning_content", None) or "") == message.get("reasoning_content", "")
    assert chat_calls(got.tool_calls) == chat_calls(message.get("tool_calls"))
    if message.get("tool_calls"):
        ids = [c["id"] for c in message["tool_calls"]]
        assert len(set(ids)) == len(ids) and all(i.startswith("call_") for i in ids)
    assert streamed.choices[0].finish_reason == body["choices"][0]["finish_reason"]
    # finish_reason on the last choice chunk only; with include_usage, the usage chunk after it.
    with_choices = [c for c in chunks if c["choices"]]
    reasons = [c["choices"][0]["finish_reason"] for c in with_choices]
    assert reasons[-1] is not None and all(r is None for r in reasons[:-1])
    assert with_choices[0]["choices"][0]["delta"].get("role") == "assistant"
    if usage:
        assert chunks[-1]["choices"] == []
        assert streamed.usage.model_dump(exclude_none=True) == body["usage"]
    else:
        assert streamed.usage is None and all("usage" not in c for c in chunks)


# -- Responses ---------------------------------------------------------------------------------


def responses_stream(items: list[Any]) -> tuple[list[dict[str, Any]], Any]:
    """The validated events, and the client's accumulated final response (None unless
    completed), after it took every event."""
    body = drive(ResponsesStreamEncoder(response_base("resp_1", 0, "m", {})), items)
    assert body.endswith(b"\n\n")
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    events = parse_events(body)
    for event in events:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=event))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    terminal = ("response.completed", "response.incomplete", "response.failed")
    assert kinds[-1] in terminal and not any(k in terminal for k in kinds[:-1])
    return events, state._completed_response


def summary(output: list[Any]) -> list[tuple[str, ...]]:
    """Output items without their ids (made-up call ids as such)."""
    out: list[tuple[str, ...]] = []
    for item in output:
        item = item if isinstance(item, dict) else item.model_dump()
        if item["type"] == "function_call":
            out.append((item["type"], mask(item["call_id"]), item["name"], item["arguments"]))
        else:
            out.append((item["type"], item["content"][0]["text"]))
    return out


def responses_json(items: list[Any]) -> tuple[dict[str, Any] | None, tuple[str, Any] | None]:
    collector = ResponseCollector()
    for item in flat(items):  # as the handler does (invoke expands): up to the first error
        collector.add(item)
        if collector.error is not None:
            return None, collector.error
    response = collector.response(response_base("resp_1", 0, "m", {}))
    RESPONSE.validate_python(response)
    return response, None


@SETTINGS
@given(runs())
def test_responses_stream_ends_with_the_json_output(items: list[Any]) -> None:
    events, final = responses_stream(items)
    output = check_items(events)
    last = events[-1]["response"]
    response, error = responses_json(items)
    assert error_of(items) == error
    if error is not None:
        assert last["status"] == "failed"
        assert last["error"]["message"] == error[0]
        return
    assert response is not None
    assert summary(output) == summary(response["output"])
    assert last["status"] == response["status"]
    assert last["incomplete_details"] == response["incomplete_details"]
    assert last["usage"] == response["usage"]
    if last["status"] == "completed":
        assert final is not None, "the client did not complete the response"
        assert summary(final.output) == summary(output)
        assert [item.id for item in final.output] == [item["id"] for item in output]


def closed_call_touched(items: list[Any]) -> bool:
    """True if an event names a call after a whole TOOL_CALL or a TOOL_RESULT completed it
    (Responses drops what it brings, Chat appends it)."""
    last: str | None = None
    closed: set[str] = set()
    made_up = 0
    for item in flat(items):
        if not isinstance(item, AgentEvent):
            continue
        data = item.data
        if item.event in (T.TOOL_CALL, T.TOOL_CALL_CHUNK):
            whole = item.event == T.TOOL_CALL
            call_id = data.get("id")
            if not call_id:
                if whole or last is None:
                    made_up += 1
                    call_id = f"made-up-{made_up}"
                else:
                    call_id = last
            if call_id in closed:
                return True
            last = call_id
            if whole:
                closed.add(call_id)
        elif item.event == T.TOOL_RESULT:
            closed.add(str(data.get("id") or last or ""))
        elif item.event == T.ERROR:
            break
    return False


@SETTINGS
@given(runs(error=False))
def test_responses_output_is_the_chat_answer(items: list[Any]) -> None:
    """The same run on both OpenAI APIs: the message text, reasoning and calls agree."""
    response, _ = responses_json(items)
    body, _ = chat_json(items)
    assert response is not None and body is not None
    message = body["choices"][0]["message"]
    output = response["output"]
    texts = [i["content"][0]["text"] for i in output if i["type"] == "message"]
    thoughts = [i["content"][0]["text"] for i in output if i["type"] == "reasoning"]
    assert "".join(texts) == (message["content"] or "")
    assert "".join(thoughts) == message.get("reasoning_content", "")
    usage = body["usage"]
    assert (response["usage"]["input_tokens"], response["usage"]["output_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    reason = body["choices"][0]["finish_reason"]
    assert (response["status"] == "incomplete") == (reason in ("length", "content_filter"))
    if not closed_call_touched(items):
        calls = [(mask(i["call_id"]), i["name"], i["arguments"]) for i in output
                 if i["type"] == "function_call"]  # fmt: skip
        assert calls == chat_calls(message.get("tool_calls"))


# -- AG-UI -------------------------------------------------------------------------------------


def agui_run(items: list[Any]) -> list[dict[str, Any]]:
    return verify(parse_sse(drive(AGUIStreamEncoder("t", "r"), items)))


def agui_portable(items: list[Any]) -> bool:
    """Whether AG-UI's tool calls must be Chat's for this run: no documented AG-UI rule applies
    (a result for a call never announced, a name given after the call started unnamed). A small
    model of the encoder's call states; an id-less chunk continues the last call on both."""
    open_: set[str] = set()
    started: dict[str, str | None] = {}  # call id -> the name it started with (None: held)
    pending: set[str] = set()  # result chunks waiting for their result
    agui_last: str | None = None
    made_up = 0

    def close(call_id: str) -> None:
        if call_id in open_:
            open_.discard(call_id)
            if started[call_id] is None:
                started[call_id] = ""

    for item in flat(items):
        if isinstance(item, str) or item.event in (T.TEXT, T.REASONING):
            delta = item if isinstance(item, str) else item.data.get("delta")
            if delta:
                for call_id in list(open_):
                    close(call_id)
            continue
        data = item.data
        if item.event == T.ERROR:
            break
        if item.event in (T.TOOL_CALL, T.TOOL_CALL_CHUNK):
            whole = item.event == T.TOOL_CALL
            given_id = data.get("id")
            if given_id:
                agui_id = str(given_id)
            else:
                agui_id = agui_last if not whole else None
                if agui_id is None:
                    made_up += 1
                    agui_id = f"made-up-{made_up}"
            name = data.get("name")
            if agui_id not in started:
                started[agui_id] = str(name or "") if (whole or name) else None
                open_.add(agui_id)
            else:
                if agui_id not in open_:
                    open_.add(agui_id)  # reopened
                if started[agui_id] is None and (name or whole):
                    started[agui_id] = str(name or "")
                elif name and started[agui_id] == "":
                    return False  # named after it started unnamed: Chat takes the name
            if whole:
                close(agui_id)
            agui_last = agui_id
        elif item.event in (T.TOOL_RESULT, T.TOOL_RESULT_CHUNK):
            call_id = str(data.get("id") or agui_last or "")
            close(call_id)
            if item.event == T.TOOL_RESULT_CHUNK:
                pending.add(call_id)
                continue
            pending.discard(call_id)
            if call_id not in started:
                return False  # a result for a call never announced: AG-UI makes one up
    return all(call_id in started for call_id in pending)


def agui_calls(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Each call as an AG-UI client rebuilds it: the name of its START, its ARGS joined."""
    calls: dict[str, list[str]] = {}
    for event in events:
        if event["type"] == "TOOL_CALL_START":
            calls.setdefault(event["toolCallId"], [event["toolCallName"], ""])
        elif event["type"] == "TOOL_CALL_ARGS":
            calls[event["toolCallId"]][1] += event["delta"]
    return sorted((mask(call_id), name, args) for call_id, (name, args) in calls.items())


def joined(events: list[dict[str, Any]], kind: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


@SETTINGS
@given(runs())
def test_agui_run_carries_the_chat_answer(items: list[Any]) -> None:
    events = agui_run(items)
    body, error = chat_json(items)
    if error is not None:
        assert events[-1]["type"] == "RUN_ERROR"
        assert events[-1]["message"] == error[0]
        # What was streamed before the error is what the Chat stream sent before its frame.
        partial, _, _ = chat_stream(items, False)
        sent = partial.choices[0].message.content if partial is not None else None
        assert joined(events, "TEXT_MESSAGE_CONTENT") == (sent or "")
        return
    assert body is not None
    assert events[-1]["type"] == "RUN_FINISHED"
    message = body["choices"][0]["message"]
    assert joined(events, "TEXT_MESSAGE_CONTENT") == (message["content"] or "")
    assert joined(events, "REASONING_MESSAGE_CONTENT") == message.get("reasoning_content", "")
    usage = events[-1].get("usage")
    given_usage = [i.data["usage"] for i in flat(items) if isinstance(i, AgentEvent)
                   and i.data.get("usage") is not None]  # fmt: skip
    if given_usage:
        assert usage is not None, "the agent's usage is missing from RUN_FINISHED"
        chat = body["usage"]
        assert usage[0]["inputTokens"] == chat["prompt_tokens"]
        assert usage[0]["outputTokens"] == chat["completion_tokens"]
        assert usage[0].get("totalTokens", chat["total_tokens"]) == chat["total_tokens"]
    if agui_portable(items):
        assert agui_calls(events) == sorted(chat_calls(message.get("tool_calls")))


# -- a stream that fails -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(runs(error=True))
def test_an_error_ends_every_form_with_its_message(items: list[Any]) -> None:
    message, code = error_of(items)  # type: ignore[misc]
    _, frame, _ = chat_stream(items, True)
    assert frame is not None and frame["message"] == message and frame["code"] == code
    assert chat_json(items)[1] == (message, code)
    events, _ = responses_stream(items)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == message
    assert responses_json(items)[1] == (message, code)
    run = agui_run(items)
    assert run[-1]["type"] == "RUN_ERROR" and run[-1]["message"] == message


def test_json_of_the_docstring_examples() -> None:
    """The comparison helpers see what they should on a hand-made run (a sanity check)."""
    items = ["Hi", E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": {"x": 1}})]
    body, _ = chat_json(items)
    assert body is not None
    assert chat_calls(body["choices"][0]["message"]["tool_calls"]) == [
        ("call_a", "f", json.dumps({"x": 1}, separators=(",", ":")))]
    assert agui_portable(items)


# -- what the properties found, pinned -----------------------------------------------------------


def every_form_calls(items: list[Any]) -> dict[str, list[tuple[str, str, str]]]:
    """The calls (id, name, arguments) a client of each protocol and form gets."""
    body, _ = chat_json(items)
    assert body is not None
    streamed, _, _ = chat_stream(items, False)
    response, _ = responses_json(items)
    assert response is not None
    events, final = responses_stream(items)
    check_items(events)

    def calls(output: list[Any]) -> list[tuple[str, str, str]]:
        return [(c, n, a) for kind, c, n, a in
                (s for s in summary(output) if s[0] == "function_call")]  # type: ignore[misc]

    return {
        "chat json": chat_calls(body["choices"][0]["message"]["tool_calls"]),
        "chat stream": chat_calls(streamed.choices[0].message.tool_calls),
        "responses json": calls(response["output"]),
        "responses stream": calls(final.output),
        "agui": agui_calls(agui_run(items)),
    }


def test_null_arguments_are_no_arguments() -> None:
    """``args``/``args_delta`` of ``None`` (OpenAI's deltas send ``"arguments": null``) add
    nothing: a whole call without arguments is ``"{}"``, and a chunk adds no ``null`` text."""
    items = [
        E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": None}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "g", "args_delta": None}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": '{"x":1}'}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": None}),
    ]
    want = [("call_a", "f", "{}"), ("call_b", "g", '{"x":1}')]
    assert every_form_calls(items) == dict.fromkeys(
        ("chat json", "chat stream", "responses json", "responses stream", "agui"), want)


# -- end to end: a real uvicorn and the official client ------------------------------------------

USAGE = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
#: Runs worth a trip over the wire: each the properties above cover, here as users see them.
FIXED: list[list[Any]] = [
    [  # reasoning, text, a call whose chunks text splits (id on its first only), its result
        E(T.REASONING, {"delta": "let me "}), E(T.REASONING, {"delta": "think"}),
        "Checking ", "the weather.",
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "get_weather", "args_delta": '{"city":'}),
        E(T.TEXT, {"delta": " (one moment)"}, addition={"timestamp": 1}),
        E(T.TOOL_CALL_CHUNK, {"args_delta": '"Oslo"}'}),
        E(T.TOOL_RESULT, {"id": "call_a", "result": {"temp": 7}}),
        E(T.STATE, {"snapshot": {"step": 2}}), E(T.CUSTOM, {"name": "progress", "value": 1}),
        "It is 7 degrees.", E(T.TEXT, {"delta": "", "usage": USAGE}),
    ],
    [  # parallel calls: one named late, arguments as a dict, a whole call with none
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "args_delta": '{"q":'}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "g", "args_delta": {"x": 1}}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "f", "args_delta": '"z"}'}),
        E(T.TOOL_CALL, {"name": "h"}),
        E(T.TOOL_RESULT_CHUNK, {"id": "call_b", "delta": "partial"}),
        E(T.TEXT, {"delta": "", "usage": {"input_tokens": 2, "output_tokens": 3}}),
    ],
    [  # null and empty arguments, a null usage after a real one, an explicit finish_reason
        E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": None}),
        E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "g", "args_delta": {}}),
        E(T.TOOL_CALL_CHUNK, {"args_delta": None, "usage": USAGE}),
        E(T.TEXT, {"delta": "done", "usage": None, "finish_reason": "stop"}),
    ],
]
FAILING: list[Any] = ["partial ", E(T.REASONING, {"delta": "hm"}),
                      E(T.ERROR, {"message": "quota exceeded", "code": "quota"}), "never"]


def _wire_server() -> Any:
    from agentrun_asgi import (
        AgentRequest,
        AgentRunServer,
        AGUIProtocolHandler,
        OpenAIProtocolHandler,
    )
    from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

    async def agent(request: AgentRequest) -> Any:
        text = request.messages[-1].text
        for item in fresh(FAILING if text == "fail" else FIXED[int(text)]):
            yield item

    return AgentRunServer(agent, protocols=[
        OpenAIProtocolHandler(), OpenAIResponsesProtocolHandler(), AGUIProtocolHandler()])


def test_fixed_runs_through_the_official_client(serve: Any) -> None:
    import openai

    with serve(_wire_server()) as base:
        oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
        for number, items in enumerate(FIXED):
            messages: Any = [{"role": "user", "content": str(number)}]
            whole = oai.chat.completions.create(model="m", messages=messages)
            with oai.chat.completions.stream(
                model="m", messages=messages, stream_options={"include_usage": True}
            ) as stream:
                streamed = stream.get_final_completion()
            body, _ = chat_json(items)
            assert body is not None
            want = body["choices"][0]
            for got in (whole, streamed):
                message = got.choices[0].message
                assert (message.content or "") == (want["message"]["content"] or ""), number
                assert (getattr(message, "reasoning_content", None) or "") == want[
                    "message"].get("reasoning_content", "")
                assert chat_calls(message.tool_calls) == chat_calls(
                    want["message"].get("tool_calls")), number
                assert got.choices[0].finish_reason == want["finish_reason"]
                assert got.usage is not None
                assert got.usage.model_dump(exclude_none=True) == body["usage"]

            response = oai.responses.create(model="m", input=str(number))
            with oai.responses.stream(model="m", input=str(number)) as rstream:
                final = rstream.get_final_response()
            expected, _ = responses_json(items)
            assert expected is not None
            for got_response in (response, final):
                assert summary(got_response.output) == summary(expected["output"]), number
                assert got_response.usage is not None
                assert got_response.usage.model_dump(exclude_none=True) == expected["usage"]

            events = post_run(base, agui_input(str(number)))
            assert joined(events, "TEXT_MESSAGE_CONTENT") == (want["message"]["content"] or "")
            run_usage = events[-1]["usage"][0]  # every fixed run gives usage
            assert (run_usage["inputTokens"], run_usage["outputTokens"]) == (
                body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
            if agui_portable(items):
                assert agui_calls(events) == sorted(chat_calls(want["message"].get("tool_calls")))


def test_a_failing_run_through_the_official_client(serve: Any) -> None:
    import httpx
    import openai

    messages: Any = [{"role": "user", "content": "fail"}]
    with serve(_wire_server()) as base:
        oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
        try:
            oai.chat.completions.create(model="m", messages=messages)
        except openai.InternalServerError as exc:
            assert exc.status_code == 500 and "quota exceeded" in str(exc)
        else:
            raise AssertionError("no 500")
        seen: list[str] = []
        try:
            for chunk in oai.chat.completions.create(model="m", messages=messages, stream=True):
                seen.append(chunk.choices[0].delta.content or "")
        except openai.APIError as exc:
            assert "quota exceeded" in str(exc)
        else:
            raise AssertionError("the stream did not fail")
        assert "".join(seen) == "partial "
        whole = httpx.post(base + "/v1/responses", json={"input": "fail"}, timeout=10)
        assert whole.status_code == 500
        assert whole.json()["error"]["message"] == "quota exceeded"
        kinds = [event.type for event in oai.responses.create(model="m", input="fail",
                                                                stream=True)]  # fmt: skip
        assert kinds[-1] == "response.failed" and kinds.count("response.failed") == 1
        events = post_run(base, agui_input("fail"))
        assert events[-1]["type"] == "RUN_ERROR" and events[-1]["message"] == "quota exceeded"
        assert joined(events, "TEXT_MESSAGE_CONTENT") == "partial "


# -- every return shape, over the wire -----------------------------------------------------------
# README "Write an agent": what an agent may return or yield, each through every protocol and
# form (the official clients, the AG-UI 1.0 models and order rules): the same text, reasoning,
# tool calls and usage, or the same error, never a hang or a traceback.

_CALLS: list[Any] = [ToolCall("call_a", "f", '{"x":1}'),
          {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": {"y": 2}}}]
_MIXED = ["Hel", E(T.REASONING, {"delta": "hm"}), "lo", E(T.TEXT, {"delta": "!"}),
          E(T.TOOL_CALL, {"id": "call_a", "name": "f", "args": {"x": 1}}),
          E(T.TEXT, {"delta": "", "usage": USAGE})]  # fmt: skip


def _sync_gen(items: list[Any]) -> Any:
    def agent(request: Any) -> Any:
        yield from fresh(items)

    return agent


def _async_gen(items: list[Any]) -> Any:
    async def agent(request: Any) -> Any:
        for item in fresh(items):
            yield item

    return agent


def _async_fn(value: Any) -> Any:
    async def agent(request: Any) -> Any:
        return value() if callable(value) else copy.deepcopy(value)

    return agent


def _fails_after(items: list[Any], is_async: bool) -> Any:
    if is_async:
        async def async_agent(request: Any) -> Any:
            for item in items:
                yield item
            raise RuntimeError("boom after chunks")

        return async_agent

    def sync_agent(request: Any) -> Any:
        yield from items
        raise RuntimeError("boom after chunks")

    return sync_agent


_NOTHING: tuple[Any, ...] = ("", "", [], None, "stop")
_WHOLE = ("Hello", "why", [("call_a", "f", '{"x":1}'), ("call_b", "g", '{"y":2}')],
          (4, 6, 10), "tool_calls")  # fmt: skip
#: shape -> (agent, (text, reasoning, calls, usage or None, Chat finish_reason) or the error
#: message and the text streamed before it)
SHAPES: dict[str, tuple[Any, Any]] = {
    "empty str": (lambda r: "", _NOTHING),
    "None, async": (_async_fn(None), _NOTHING),
    "empty sync generator": (_sync_gen([]), _NOTHING),
    "empty async generator": (_async_gen([]), _NOTHING),
    "events only, no text": (_async_gen([
        E(T.TOOL_CALL, {"id": "call_c", "name": "f"}),
        E(T.TOOL_RESULT, {"id": "call_c", "result": "r"}),
        E(T.STATE, {"snapshot": {"n": 1}}), E(T.CUSTOM, {"name": "n", "value": 1})]),
        ("", "", [("call_c", "f", "{}")], None, "tool_calls")),
    "AgentResponse": (lambda r: AgentResponse("Hello", "why", copy.deepcopy(_CALLS), USAGE,
                                              "tool_calls"), _WHOLE),
    "dict of AgentResponse fields, async": (_async_fn(
        {"content": "Hello", "reasoning_content": "why", "tool_calls": _CALLS,
         "usage": {"input_tokens": 4, "output_tokens": 6}, "finish_reason": "tool_calls"}), _WHOLE),
    # What an agent relaying another OpenAI-compatible API returns: ``message.model_dump()``.
    "OpenAI assistant message dict": (_async_fn(
        {"content": "Hello", "refusal": None, "role": "assistant", "annotations": None,
         "audio": None, "function_call": None, "reasoning_content": "why",
         "tool_calls": [{"id": "call_b", "type": "function",
                         "function": {"name": "g", "arguments": '{"y":2}'}}]}),
        ("Hello", "why", [("call_b", "g", '{"y":2}')], None, "tool_calls")),
    # A delta is text; anything else goes out as its JSON on every protocol, not str() on some.
    "deltas that are not text": (_async_gen([
        E(T.REASONING, {"delta": 3}), E(T.TEXT, {"delta": {"a": [1]}}),
        E(T.TEXT, {"delta": True}, {"timestamp": 1}),
        E(T.REASONING, {"delta": [2]}, {"timestamp": 1})]),
        ('{"a":[1]}true', "3[2]", [], None, "stop")),
    "list mixing str and events": (lambda r: fresh(_MIXED),
                                   ("Hello!", "hm", [("call_a", "f", '{"x":1}')], (4, 6, 10),
                                    "tool_calls")),
    "iterator": (lambda r: iter(fresh(_MIXED)),
                 ("Hello!", "hm", [("call_a", "f", '{"x":1}')], (4, 6, 10), "tool_calls")),
    "generator yielding an AgentResponse": (_async_gen(
        ["He", AgentResponse("llo", "why", copy.deepcopy(_CALLS), USAGE, "tool_calls")]), _WHOLE),
    "async function returning a sync generator": (_async_fn(lambda: _sync_gen(_MIXED)(None)),
        ("Hello!", "hm", [("call_a", "f", '{"x":1}')], (4, 6, 10), "tool_calls")),
    "sync generator raising after chunks": (
        _fails_after(["partial ", E(T.REASONING, {"delta": "r"})], False),
        ("boom after chunks", "partial ")),
    "async generator raising after chunks": (
        _fails_after(["partial ", E(T.REASONING, {"delta": "r"})], True),
        ("boom after chunks", "partial ")),
}  # fmt: skip


@pytest.fixture(scope="module")
def shapes_server() -> Any:
    from conftest import run_server

    from agentrun_asgi import (
        AgentRunServer,
        AGUIProtocolHandler,
        OpenAIProtocolHandler,
    )
    from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

    def agent(request: Any) -> Any:
        return SHAPES[request.messages[-1].text][0](request)

    server = AgentRunServer(agent, protocols=[
        OpenAIProtocolHandler(), OpenAIResponsesProtocolHandler(), AGUIProtocolHandler()])
    with run_server(server) as base:
        yield base


def _usage(usage: Any) -> tuple[int, int, int] | None:
    if usage is None:
        return None
    u = usage.model_dump()
    return (u.get("prompt_tokens", u.get("input_tokens")),
            u.get("completion_tokens", u.get("output_tokens")), u["total_tokens"])  # fmt: skip


def _chat_answer(completion: Any) -> tuple[Any, ...]:
    message = completion.choices[0].message
    return (message.content or "", (message.model_extra or {}).get("reasoning_content") or "",
            chat_calls(message.tool_calls), _usage(completion.usage) or None,
            completion.choices[0].finish_reason)  # fmt: skip


def _responses_answer(response: Any) -> tuple[Any, ...]:
    text = "".join(p.text for i in response.output if i.type == "message" for p in i.content)
    reasoning = "".join(p.text for i in response.output if i.type == "reasoning"
                        for p in i.content or ())  # fmt: skip
    calls = [(i.call_id, i.name, i.arguments) for i in response.output
             if i.type == "function_call"]  # fmt: skip
    assert response.status == "completed"
    return text, reasoning, calls, _usage(response.usage)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_return_shape_through_every_protocol(shapes_server: str, shape: str) -> None:
    import httpx
    import openai

    base = shapes_server
    want = SHAPES[shape][1]
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
    messages: Any = [{"role": "user", "content": shape}]
    agui_events = post_run(base, agui_input(shape))
    agui_text = joined(agui_events, "TEXT_MESSAGE_CONTENT")
    raw = httpx.post(base + "/v1/responses", json={"input": shape, "stream": True}, timeout=10)
    response_events = parse_events(raw.content)
    check_items(response_events)
    if len(want) == 2:  # a failed run: the protocol's error form, with the agent's message
        message, partial = want
        with pytest.raises(openai.InternalServerError, match=message) as caught:
            oai.chat.completions.create(model="m", messages=messages)
        assert caught.value.response.headers["x-should-retry"] == "false"
        streamed = []
        with pytest.raises(openai.APIError, match=message):
            for chunk in oai.chat.completions.create(model="m", messages=messages, stream=True):
                streamed.append(chunk.choices[0].delta.content or "")
        assert "".join(streamed) == partial
        assert agui_events[-1] == {"type": "RUN_ERROR", "message": message}
        assert agui_text == partial
        with pytest.raises(openai.InternalServerError, match=message):
            oai.responses.create(model="m", input=shape)
        failed = response_events[-1]
        assert failed["type"] == "response.failed"
        assert failed["response"]["error"]["message"] == message
        return
    text, reasoning, calls, usage, finish = want
    zero = (0, 0, 0)
    chat_want = (text, reasoning, calls, usage or zero, finish)
    assert _chat_answer(oai.chat.completions.create(model="m", messages=messages)) == chat_want
    with oai.chat.completions.stream(model="m", messages=messages,
                                     stream_options={"include_usage": True}) as stream:
        assert _chat_answer(stream.get_final_completion()) == chat_want
    assert _responses_answer(oai.responses.create(model="m", input=shape)) == (
        text, reasoning, calls, usage or zero)
    with oai.responses.stream(model="m", input=shape) as rstream:
        assert _responses_answer(rstream.get_final_response()) == (
            text, reasoning, calls, usage or zero)
    assert agui_events[-1]["type"] == "RUN_FINISHED"
    assert agui_text == text
    assert joined(agui_events, "REASONING_MESSAGE_CONTENT") == reasoning
    assert agui_calls(agui_events) == sorted(calls)
    run_usage = agui_events[-1].get("usage")
    assert (None if run_usage is None else (run_usage[0]["inputTokens"],
            run_usage[0]["outputTokens"], run_usage[0]["totalTokens"])) == usage  # fmt: skip


def test_chat_names_a_call_in_its_first_delta_when_its_name_comes_late() -> None:
    """OpenAI names a call in its first delta, and some clients fail on one named "" (the Vercel
    AI SDK: "Expected 'function.name' to be a string"). A call whose first chunks have no name
    is held until the name comes; one still unnamed when a later call starts, or at the end,
    starts then, so calls keep the order clients index them by."""
    late = [E(T.TOOL_CALL_CHUNK, {"id": "call_a", "args_delta": '{"a"'}), "text between ",
            E(T.TOOL_CALL_CHUNK, {"name": "f", "args_delta": ": 1}"})]  # fmt: skip
    completion, _, chunks = chat_stream(late, False)
    starts = [call for chunk in chunks for call in chunk["choices"][0]["delta"].get(
        "tool_calls") or () if "id" in call]  # fmt: skip
    assert [(s["id"], s["function"]["name"]) for s in starts] == [("call_a", "f")]
    assert chat_calls(completion.choices[0].message.tool_calls) == [("call_a", "f", '{"a": 1}')]
    # Overtaken by a named call, or never named: started unnamed, in the order given.
    overtaken = [E(T.TOOL_CALL_CHUNK, {"id": "call_a", "args_delta": "{}"}),
                 E(T.TOOL_CALL, {"id": "call_b", "name": "g", "args": "{}"}),
                 E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "f"}),
                 E(T.TOOL_CALL_CHUNK, {"id": "call_c", "args_delta": "{}"})]  # fmt: skip
    completion, _, _ = chat_stream(overtaken, False)
    assert chat_calls(completion.choices[0].message.tool_calls) == [
        ("call_a", "f", "{}"), ("call_b", "g", "{}"), ("call_c", "", "{}")]
