"""OpenAI Chat Completions input: a ``POST /chat/completions`` body parsed and checked by hand.

Field rules per the OpenAI API reference ("Create chat completion"); unknown fields are kept
for the agent in ``extra``, never an error.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..models import AgentRequest, Message, MessageRole, Tool, ToolCall
from .validation import (
    invalid,
    json_type,
    message_content,
    opt_bool,
    opt_int,
    opt_list,
    opt_number,
    opt_object,
    opt_str,
)

DEFAULT_MODEL = "agentrun"
_ROLES = {role.value: role for role in MessageRole}
_ROLE_NAMES = ", ".join(_ROLES)
_KNOWN_FIELDS = frozenset(
    (
        "model", "messages", "stream", "stream_options", "tools", "tool_choice", "temperature",
        "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "user",
    )
)  # fmt: skip


# -- request parsing ---------------------------------------------------------------------------


def parse_chat_request(data: dict[str, Any]) -> tuple[AgentRequest, bool]:
    """An ``AgentRequest`` from a parsed body, and whether the client asked for a usage chunk."""
    messages = data.get("messages")
    if messages is None:
        invalid("messages", "'messages' is required.")
    if not isinstance(messages, list):
        invalid("messages", f"'messages' must be an array, not {json_type(messages)}.")
    if not messages:
        invalid("messages", "'messages' must contain at least one message.")
    stream_options = opt_object(data, "stream_options")
    include_usage = bool(stream_options and opt_bool(stream_options, "include_usage",
                                                     "stream_options.include_usage"))  # fmt: skip
    max_tokens = opt_int(data, "max_tokens")
    max_completion_tokens = opt_int(data, "max_completion_tokens")
    request = AgentRequest(
        protocol="openai",
        messages=[_parse_message(m, i) for i, m in enumerate(messages)],
        model=opt_str(data, "model") or DEFAULT_MODEL,
        stream=bool(opt_bool(data, "stream")),
        tools=_parse_tools(opt_list(data, "tools")),
        tool_choice=_parse_tool_choice(data.get("tool_choice")),
        temperature=opt_number(data, "temperature"),
        top_p=opt_number(data, "top_p"),
        max_tokens=max_tokens if max_tokens is not None else max_completion_tokens,
        stop=_parse_stop(data.get("stop")),
        n=opt_int(data, "n"),
        user=opt_str(data, "user"),
        extra={k: v for k, v in data.items() if k not in _KNOWN_FIELDS},
    )
    return request, include_usage


def _parse_message(raw: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        invalid(where, f"'{where}' must be an object, not {json_type(raw)}.")
    raw_role = raw.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        invalid(
            f"{where}.role",
            f"'{where}.role' must be one of {_ROLE_NAMES}; got {orjson.dumps(raw_role).decode()}.",
        )
    content = message_content(raw, where)
    tool_calls = opt_list(raw, "tool_calls", f"{where}.tool_calls")
    return Message(
        role=role,
        content=content,
        name=opt_str(raw, "name", f"{where}.name"),
        tool_calls=_parse_tool_calls(tool_calls, where) if tool_calls is not None else None,
        tool_call_id=opt_str(raw, "tool_call_id", f"{where}.tool_call_id"),
    )


def _parse_tool_calls(raw: list[Any], where: str) -> list[ToolCall]:
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(call)}.")
        function = opt_object(call, "function", f"{at}.function") or {}
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        calls.append(
            ToolCall(
                id=opt_str(call, "id", f"{at}.id") or "",
                name=opt_str(function, "name", f"{at}.function.name") or "",
                arguments=arguments,
            )
        )
    return calls


def _parse_tools(raw: list[Any] | None) -> list[Tool] | None:
    if raw is None:
        return None
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        # OpenAI nests the definition in "function"; a flat {name, ...} is accepted too.
        spec = opt_object(item, "function", f"{at}.function") or item
        name = opt_str(spec, "name", f"{at}.function.name")
        if not name:
            invalid(f"{at}.function.name", f"'{at}.function.name' is required.")
        tools.append(
            Tool(
                name=name,
                description=opt_str(spec, "description", f"{at}.function.description"),
                parameters=opt_object(spec, "parameters", f"{at}.function.parameters"),
                type=opt_str(item, "type", f"{at}.type") or "function",
            )
        )
    return tools


def _parse_tool_choice(value: Any) -> str | dict[str, Any] | None:
    if value is None or isinstance(value, (str, dict)):
        return value
    invalid("tool_choice", f"'tool_choice' must be a string or an object, not {json_type(value)}.")


def _parse_stop(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    invalid("stop", "'stop' must be a string, an array of strings or null.")
