"""Checks of AG-UI 1.0 streams for the tests: SSE parsing, the official models, event order.

Every event is validated with the ``ag_ui.core`` 1.0 pydantic models (the reference). Those
models keep unknown keys and accept ``null`` for optional fields, while the 1.0 TypeScript
client's schema rejects both, so :func:`check_event` also demands that the event has no key the
model does not declare (at any depth) and that it dumps back to exactly what was sent.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from ag_ui.core import Event
from pydantic import BaseModel, TypeAdapter

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
TERMINAL = frozenset(("RUN_FINISHED", "RUN_ERROR"))


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    """The JSON events of an SSE body; every frame must be ``data: <json>`` and complete."""
    assert body.endswith(b"\n\n"), f"stream does not end with a blank line: {body[-80:]!r}"
    events = []
    for frame in body.split(b"\n\n")[:-1]:
        lines = frame.split(b"\n")
        assert len(lines) == 1 and lines[0].startswith(b"data: "), f"bad SSE frame {frame!r}"
        events.append(orjson.loads(lines[0][6:]))
    return events


def _no_extra(model: Any, where: str) -> None:
    if isinstance(model, BaseModel):
        assert not model.model_extra, (
            f"{where}: keys the 1.0 schema does not have: {model.model_extra}"
        )
        for name in type(model).model_fields:
            _no_extra(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            _no_extra(item, f"{where}[{i}]")


def check_event(event: dict[str, Any]) -> BaseModel:
    """The official model of ``event``, after checking its key set is exactly the spec's."""
    model = EVENT_ADAPTER.validate_python(event)
    _no_extra(model, event.get("type", "?"))
    dumped = model.model_dump(mode="json", by_alias=True)
    assert dumped == event, (
        f"not a faithful 1.0 event (null optional or coerced field):\n{event}\n{dumped}"
    )
    return model


def verify(
    events: list[dict[str, Any]], earlier_calls: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Validate every event and the order rules of one run; returns the events."""
    for event in events:
        check_event(event)
    verify_order(events, earlier_calls)
    return events


def verify_order(events: list[dict[str, Any]], earlier_calls: Collection[str] = ()) -> None:
    """The structure rules of PROTOCOLS.md ("AG-UI 1.0"), as the clients' verifier sees them;
    ``earlier_calls``: the calls of the run's input messages, which a result may answer."""
    assert events, "empty run"
    first = events[0]
    assert first["type"] == "RUN_STARTED", f"run does not open with RUN_STARTED: {first}"
    assert first.get("protocolVersion") == "1.0"
    last = events[-1]
    assert last["type"] in TERMINAL, f"run does not end with RUN_FINISHED/RUN_ERROR: {last}"
    texts: set[str] = set()
    reasoning_blocks: set[str] = set()
    reasoning_messages: set[str] = set()
    calls: set[str] = set()
    ended_calls: set[str] = set(earlier_calls)
    call_heads: dict[str, tuple[Any, Any]] = {}  # a reopened call must repeat its opener's
    for i, event in enumerate(events):
        kind = event["type"]
        where = f"event {i} {kind}"
        if i and kind == "RUN_STARTED":
            raise AssertionError(f"{where}: second RUN_STARTED")
        if kind in TERMINAL:
            assert i == len(events) - 1, f"{where}: events after the end of the run"
            assert not (texts or reasoning_blocks or reasoning_messages or calls), (
                f"{where}: still open: {texts, reasoning_blocks, reasoning_messages, calls}"
            )
            if kind == "RUN_FINISHED":
                assert event["threadId"] == first["threadId"] and event["runId"] == first["runId"]
        elif kind == "TEXT_MESSAGE_START":
            assert not texts, f"{where}: a text message is already open"
            texts.add(event["messageId"])
        elif kind == "TEXT_MESSAGE_CONTENT":
            assert event["messageId"] in texts, f"{where}: message not open"
            assert event["delta"], f"{where}: empty delta"
        elif kind == "TEXT_MESSAGE_END":
            assert event["messageId"] in texts, f"{where}: message not open"
            texts.discard(event["messageId"])
        elif kind == "REASONING_START":
            assert not texts, f"{where}: text message not closed before reasoning"
            assert not reasoning_blocks, f"{where}: reasoning block already open"
            reasoning_blocks.add(event["messageId"])
        elif kind == "REASONING_MESSAGE_START":
            assert reasoning_blocks and not reasoning_messages, where
            assert event["role"] == "reasoning"
            reasoning_messages.add(event["messageId"])
        elif kind == "REASONING_MESSAGE_CONTENT":
            assert event["messageId"] in reasoning_messages, where
        elif kind == "REASONING_MESSAGE_END":
            assert event["messageId"] in reasoning_messages, where
            reasoning_messages.discard(event["messageId"])
        elif kind == "REASONING_END":
            assert event["messageId"] in reasoning_blocks and not reasoning_messages, where
            reasoning_blocks.discard(event["messageId"])
        elif kind == "TOOL_CALL_START":
            assert not texts, f"{where}: text message not closed before a tool call"
            assert not reasoning_blocks, f"{where}: reasoning not closed before a tool call"
            assert event["toolCallId"] not in calls, f"{where}: tool call already open"
            head = (event["toolCallName"], event.get("parentMessageId"))
            opened = call_heads.setdefault(event["toolCallId"], head)
            assert head == opened, f"{where}: reopened with {head}, opened as {opened}"
            calls.add(event["toolCallId"])
        elif kind == "TOOL_CALL_ARGS":
            assert event["toolCallId"] in calls, f"{where}: tool call not open"
        elif kind == "TOOL_CALL_END":
            assert event["toolCallId"] in calls, f"{where}: tool call not open"
            calls.discard(event["toolCallId"])
            ended_calls.add(event["toolCallId"])
        elif kind == "TOOL_CALL_RESULT":
            assert event["toolCallId"] in ended_calls, f"{where}: result before the call ended"
            assert event.get("role") == "tool"


def of_type(events: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in kinds]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
