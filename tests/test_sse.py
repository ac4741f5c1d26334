"""The raw bytes of a Chat Completions stream, read with httpx as they arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType

USER = [{"role": "user", "content": "hi"}]


async def _mixed_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    mode = request.messages[-1].text
    if mode == "raw":
        yield "a"
        yield AgentEvent(EventType.RAW, {"raw": ": a comment"})
        yield AgentEvent(EventType.RAW, {"raw": "event: ping\ndata: {}\n\n"})
        yield "b"
        return
    if mode == "tools":
        yield AgentEvent(EventType.TOOL_CALL, {"id": "c1", "name": "f", "args": '{"x":1}'})
        return
    if mode == "reasoning":
        yield AgentEvent(EventType.REASONING, {"delta": "hmm"})
        yield "done"
        return
    if mode == "empty":
        return
    if mode == "ignored":
        # Events Chat Completions has no place for write nothing.
        yield AgentEvent(EventType.STATE, {"snapshot": {"a": 1}})
        yield AgentEvent(EventType.CUSTOM, {"name": "n", "value": 1})
        yield AgentEvent(EventType.TOOL_RESULT, {"id": "c1", "result": "r"})
        yield "text"
        return
    if mode == "addition":
        yield AgentEvent(EventType.TEXT, {"delta": "x"}, addition={"extra_key": 7})
        return
    if mode == "held_unsendable":
        # A call held for its name, with an addition orjson refuses, then more output.
        chunk = {"id": "c1", "args_delta": "{"}
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, chunk, addition={"k": {1}})
        yield "after"
        return
    for piece in ("Hel", "lo", "", " world"):
        yield piece


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from conftest import run_server

    with run_server(AgentRunServer(_mixed_agent)) as url:
        yield url


def stream_frames(base_url: str, mode: str) -> tuple[httpx.Headers, list[bytes], bytes]:
    """The response headers, each SSE frame in order (bytes, with its blank line), and all."""
    body = {"model": "sse-model", "messages": [{"role": "user", "content": mode}], "stream": True}
    raw = b""
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        headers = r.headers
        for piece in r.iter_raw():
            raw += piece
    frames = [part + b"\n\n" for part in raw.split(b"\n\n")[:-1]]
    assert b"".join(frames) == raw, "the stream must end with a complete frame"
    return headers, frames, raw


def chunks_of(frames: list[bytes]) -> list[dict[str, Any]]:
    assert frames[-1] == b"data: [DONE]\n\n"
    out = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ")
        assert frame.count(b"\n") == 2, frame  # exactly one line then the blank line
        out.append(json.loads(frame[len(b"data: "):]))
    return out


def test_text_stream_frames(base_url: str) -> None:
    headers, frames, _ = stream_frames(base_url, "text")
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    chunks = chunks_of(frames)
    ids = {(c["id"], c["created"], c["model"], c["object"]) for c in chunks}
    assert len(ids) == 1
    (cid, created, model, obj) = ids.pop()
    assert cid.startswith("chatcmpl-") and isinstance(created, int)
    assert (model, obj) == ("sse-model", "chat.completion.chunk")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    # First delta: role together with the first content, never a role-only chunk.
    assert deltas[0] == {"role": "assistant", "content": "Hel"}
    assert deltas[1:-1] == [{"content": "lo"}, {"content": " world"}]  # empty str skipped
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 3
    assert all(c["choices"][0]["index"] == 0 for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_tool_call_stream_frames(base_url: str) -> None:
    _, frames, _ = stream_frames(base_url, "tools")
    chunks = chunks_of(frames)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {
        "role": "assistant",
        "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": ""}}],
    }
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":1}'}}]}
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert len(chunks) == 3


def test_reasoning_first_carries_role(base_url: str) -> None:
    _, frames, _ = stream_frames(base_url, "reasoning")
    deltas = [c["choices"][0]["delta"] for c in chunks_of(frames)]
    assert deltas == [{"role": "assistant", "reasoning_content": "hmm"}, {"content": "done"}, {}]


def test_empty_stream_still_well_formed(base_url: str) -> None:
    _, frames, _ = stream_frames(base_url, "empty")
    chunks = chunks_of(frames)
    assert len(chunks) == 1
    assert chunks[0]["choices"][0]["finish_reason"] == "stop"
    # The client needs a role somewhere: an empty run puts it on the finish chunk.
    assert chunks[0]["choices"][0]["delta"].get("role", "assistant") == "assistant"


def test_events_without_a_place_are_skipped(base_url: str) -> None:
    _, frames, _ = stream_frames(base_url, "ignored")
    deltas = [c["choices"][0]["delta"] for c in chunks_of(frames)]
    assert deltas == [{"role": "assistant", "content": "text"}, {}]


def test_unsendable_addition_of_a_held_call_fails_where_it_is_given(base_url: str) -> None:
    """A call held until its name comes must not hold back an item that cannot be sent: the
    stream ends there, as for any other item, not after later output with orjson's bare words."""
    _, frames, _ = stream_frames(base_url, "held_unsendable")
    assert len(frames) == 1, frames
    assert b"cannot be sent" in frames[0], frames[0]


def test_addition_merged_into_delta(base_url: str) -> None:
    _, frames, _ = stream_frames(base_url, "addition")
    deltas = [c["choices"][0]["delta"] for c in chunks_of(frames)]
    assert deltas[0] == {"role": "assistant", "content": "x", "extra_key": 7}


def test_raw_written_verbatim(base_url: str) -> None:
    _, _, raw = stream_frames(base_url, "raw")
    # A RAW without a blank line gets one; one that has it is left as is.
    assert b'"content":"a"}' in raw
    assert b"}\n\n: a comment\n\nevent: ping\ndata: {}\n\ndata: {" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
    parts = raw.split(b"\n\n")
    assert b": a comment" in parts and b"event: ping\ndata: {}" in parts


def test_frames_arrive_as_produced(serve: Any) -> None:
    """A frame is on the wire before the agent produces the next one (no buffering)."""
    import threading

    gate = threading.Event()

    def agent(request: AgentRequest) -> Iterator[str]:
        yield "first"
        assert gate.wait(5), "the client never saw the first frame"
        yield "second"

    body = {"messages": USER, "stream": True}
    with serve(AgentRunServer(agent)) as base:
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=10) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            assert json.loads(first[len("data: "):])["choices"][0]["delta"]["content"] == "first"
            gate.set()
            rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[0][len("data: "):])["choices"][0]["delta"] == {"content": "second"}
