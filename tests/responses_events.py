"""Checks of a Responses API event stream shared by the tests that read one."""

from __future__ import annotations

from typing import Any, get_args

import orjson
from openai.types.responses import ResponseStreamEvent

#: Each event model of the client by its ``type``, so a failure names the one model it broke.
EVENT_MODELS: dict[str, Any] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(ResponseStreamEvent)[0])
}


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """``event: <type>`` / ``data: <json>`` frames; the event line must match the data's type."""
    assert body.endswith(b"\n\n")
    events = []
    for frame in body.split(b"\n\n")[:-1]:
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: "), frame
        event = orjson.loads(data_line[6:])
        assert event["type"] == event_line[7:].decode()
        EVENT_MODELS[event["type"]].model_validate(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events



def check_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final output, after checking every item's events: one added and (unless the run
    failed) one done per output_index, its deltas between and adding up to its done events,
    one item per call id, and the final output holding each item at its index."""
    final = events[-1]["response"]
    output = final["output"]
    failed = final["status"] == "failed"
    opened: dict[int, dict[str, Any]] = {}
    closed: set[int] = set()
    streamed: dict[int, str] = {}
    for event in events[2:-1]:
        index = event["output_index"]
        if event["type"] == "response.output_item.added":
            assert index == len(opened) and index not in opened
            opened[index] = event["item"]
            streamed[index] = ""
            continue
        assert index in opened and index not in closed, event
        assert event.get("item_id", opened[index]["id"]) == opened[index]["id"]
        if event["type"].endswith(".delta"):
            streamed[index] += event["delta"]
        elif event["type"] == "response.function_call_arguments.done":
            assert event["arguments"] == streamed[index]
            assert event["name"] == output[index]["name"]
        elif event["type"].endswith("_text.done"):
            assert event["text"] == streamed[index]
        elif event["type"] == "response.output_item.done":
            assert event["item"] == output[index]
            closed.add(index)
    assert sorted(opened) == list(range(len(output)))
    if not failed:
        assert sorted(closed) == list(range(len(output)))
    for index, item in enumerate(output):
        assert item["id"] == opened[index]["id"]
        text = item["arguments"] if item["type"] == "function_call" else item["content"][0]["text"]
        assert text == streamed[index]
    call_ids = [item["call_id"] for item in output if item["type"] == "function_call"]
    assert len(call_ids) == len(set(call_ids)), call_ids
    return output  # type: ignore[no-any-return]
