"""Ways an agent streams tool calls, and the calls a client must get from each (Chat Completions
and the Responses API, streamed or not): the id rule of ``TOOL_CALL_CHUNK``.

OpenAI's deltas and the AgentRun SDK give a call's id on its first chunk only; a chunk without
an id continues the last call seen, and opens one (with a made-up id) only when none was.
"""

from __future__ import annotations

from typing import Any

from agentrun_asgi import AgentEvent, EventType

_CHUNK, _CALL = EventType.TOOL_CALL_CHUNK, EventType.TOOL_CALL

Events = list[tuple[EventType, dict[str, Any]]]
Calls = list[tuple[str | None, str, str]]

#: name -> (the agent's events as (type, data), the calls as (id, name, arguments)); an id of
#: ``None`` is one the server makes up.
SHAPES: dict[str, tuple[Events, Calls]] = {
    "id on the first chunk only": (
        [(_CHUNK, {"id": "call_1", "name": "get_weather", "args_delta": '{"city"'}),
         (_CHUNK, {"args_delta": ':"Os'}),  # no id key, a null id, an empty id
         (_CHUNK, {"id": None, "args_delta": 'lo"'}),
         (_CHUNK, {"id": "", "args_delta": "}"})],
        [("call_1", "get_weather", '{"city":"Oslo"}')],
    ),
    "id on every chunk": (
        [(_CHUNK, {"id": "call_1", "name": "get_weather", "args_delta": '{"city":'}),
         (_CHUNK, {"id": "call_1", "args_delta": '"Oslo"}'})],
        [("call_1", "get_weather", '{"city":"Oslo"}')],
    ),
    "two parallel calls with ids": (
        [(_CHUNK, {"id": "call_a", "name": "get_weather", "args_delta": '{"city":'}),
         (_CHUNK, {"id": "call_b", "name": "get_time", "args_delta": '{"tz":'}),
         (_CHUNK, {"id": "call_a", "args_delta": '"Oslo"}'}),
         (_CHUNK, {"id": "call_b", "args_delta": '"UTC"}'})],
        [("call_a", "get_weather", '{"city":"Oslo"}'), ("call_b", "get_time", '{"tz":"UTC"}')],
    ),
    "two calls in turn, each id on its first chunk": (
        [(_CHUNK, {"id": "call_a", "name": "get_weather", "args_delta": '{"city":'}),
         (_CHUNK, {"args_delta": '"Oslo"}'}),
         (_CHUNK, {"id": "call_b", "name": "get_time", "args_delta": '{"tz":'}),
         (_CHUNK, {"args_delta": '"UTC"}'})],
        [("call_a", "get_weather", '{"city":"Oslo"}'), ("call_b", "get_time", '{"tz":"UTC"}')],
    ),
    "a chunk without an id continues the last call seen": (
        [(_CHUNK, {"id": "call_a", "name": "get_weather", "args_delta": '{"city":'}),
         (_CHUNK, {"id": "call_b", "name": "get_time", "args_delta": '{"tz":"UTC"}'}),
         (_CHUNK, {"id": "call_a", "args_delta": '"Os'}),
         (_CHUNK, {"args_delta": 'lo"}'})],
        [("call_a", "get_weather", '{"city":"Oslo"}'), ("call_b", "get_time", '{"tz":"UTC"}')],
    ),
    "no call before the first chunk without an id": (
        [(_CHUNK, {"name": "get_weather", "args_delta": '{"city":'}),
         (_CHUNK, {"args_delta": '"Oslo"}'})],
        [(None, "get_weather", '{"city":"Oslo"}')],
    ),
    "whole calls without ids are calls of their own": (
        [(_CALL, {"name": "get_weather", "args": '{"city":"Oslo"}'}),
         (_CALL, {"name": "get_time", "args": '{"tz":"UTC"}'})],
        [(None, "get_weather", '{"city":"Oslo"}'), (None, "get_time", '{"tz":"UTC"}')],
    ),
}


def events(shape: str) -> list[AgentEvent]:
    """The shape's events, made anew for each run."""
    return [AgentEvent(kind, dict(data)) for kind, data in SHAPES[shape][0]]


def check(calls: list[tuple[str, str, str]], shape: str) -> None:
    """``calls`` (id, name, arguments) are the shape's calls; made-up ids are distinct."""
    expected = SHAPES[shape][1]
    assert len(calls) == len(expected), calls
    pairs = zip(calls, expected, strict=True)
    assert calls == [(want or got, name, args) for (got, _, _), (want, name, args) in pairs]
    assert all(call_id.startswith("call_") for call_id, _, _ in calls)
    assert len({call_id for call_id, _, _ in calls}) == len(calls), calls
