"""OpenAI Chat Completions input: a ``POST /chat/completions`` body parsed and checked by hand.

Field rules per the OpenAI API reference ("Create chat completion"); unknown fields are kept
for the agent in ``extra``, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..models import AgentRequest, Message, MessageRole, Tool, ToolCall
from .validation import (
    array,
    boolean,
    integer,
    invalid,
    json_type,
    message_content,
    number,
    obj,
    opt_list,
    opt_object,
    opt_str,
    string,
)

DEFAULT_MODEL = "agentrun"
_ROLES = {role.value: role for role in MessageRole}
_ROLE_NAMES = ", ".join(_ROLES)


# -- request parsing ---------------------------------------------------------------------------


def _tool_choice(param: str, value: Any) -> str | dict[str, Any] | None:
    if value is None or isinstance(value, (str, dict)):
        return value
    invalid(param, f"'{param}' must be a string or an object, not {json_type(value)}.")


def _stop(param: str, value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    invalid(param, f"'{param}' must be a string, an array of strings or null.")


def _tools(param: str, value: Any) -> list[Tool] | None:
    return _parse_tools(array(param, value))


#: Body fields that map one to one onto ``AgentRequest`` fields, with their checks.
_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "model": string, "stream": boolean, "tools": _tools, "tool_choice": _tool_choice,
    "temperature": number, "top_p": number, "max_tokens": integer, "stop": _stop, "n": integer,
    "user": string,
}  # fmt: skip


def parse_chat_request(data: dict[str, Any]) -> tuple[AgentRequest, bool]:
    """An ``AgentRequest`` from a parsed body, and whether the client asked for a usage chunk.

    One pass over the keys the body has (usually two or three), not one lookup per known field.
    """
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    messages: Any = None
    include_usage = False
    max_completion_tokens = None
    for key, value in data.items():
        check = _FIELDS.get(key)
        if check is not None:
            if value is not None:
                fields[key] = check(key, value)
        elif key == "messages":
            messages = value
        elif key == "stream_options":
            options = obj(key, value)
            if options:
                param = "stream_options.include_usage"
                include_usage = bool(boolean(param, options.get("include_usage")))
        elif key == "max_completion_tokens":
            max_completion_tokens = integer(key, value)
        else:
            extra[key] = value
    if messages is None:
        invalid("messages", "'messages' is required.")
    if not isinstance(messages, list):
        invalid("messages", f"'messages' must be an array, not {json_type(messages)}.")
    if not messages:
        invalid("messages", "'messages' must contain at least one message.")
    if max_completion_tokens is not None and "max_tokens" not in fields:
        fields["max_tokens"] = max_completion_tokens
    if not fields.get("model"):
        fields["model"] = DEFAULT_MODEL
    request = AgentRequest(
        protocol="openai",
        messages=[_parse_message(m, i) for i, m in enumerate(messages)],
        extra=extra,
        **fields,
    )
    return request, include_usage


def _parse_message(raw: Any, i: int) -> Message:
    if not isinstance(raw, dict):
        invalid(f"messages[{i}]", f"'messages[{i}]' must be an object, not {json_type(raw)}.")
    raw_role = raw.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        invalid(
            f"messages[{i}].role",
            f"'messages[{i}].role' must be one of {_ROLE_NAMES}; "
            f"got {orjson.dumps(raw_role).decode()}.",
        )
    content = raw.get("content")
    if len(raw) == 2 and type(content) is str:
        return Message(role, content)  # role and text: nothing more to check
    where = f"messages[{i}]"
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
