"""Checks of a Responses API event stream shared by the tests that read one."""

from __future__ import annotations

from typing import Any


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
