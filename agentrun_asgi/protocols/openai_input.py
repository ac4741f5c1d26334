"""OpenAI Chat Completions input: a ``POST /chat/completions`` body parsed and checked by hand.

Field rules per the OpenAI API reference ("Create chat completion"); unknown fields are kept
for the agent in ``extra``, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, NoReturn

from ..models import AgentRequest, Message, MessageRole, Tool, ToolCall, chat_request
from .validation import (
    arguments_text,
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
    parse_tool_calls,
    shown,
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


def _choices(param: str, value: Any) -> int | None:
    """``n``: a run gives one answer, so ``n > 1`` (one choice each, in OpenAI's API) is a 400,
    not a response whose ``choices[1]`` a client would find missing."""
    n = integer(param, value)
    if n is not None and n != 1:
        invalid(param, f"'{param}' must be 1: the agent gives one answer a request, not {n}.")
    return n


def _tools(param: str, value: Any) -> list[Tool] | None:
    return _parse_tools(array(param, value))


#: ``AgentRequest``'s leading fields, in order: the request is built with one positional call
#: (keywords, or ``**`` a dict, cost twice as much, and this runs for every request).
_ORDER = [f.name for f in fields(AgentRequest)]
_EXTRA = _ORDER.index("extra")
_MESSAGES = _ORDER.index("messages")
_MODEL = _ORDER.index("model")
_MAX_TOKENS = _ORDER.index("max_tokens")
_DEFAULTS: list[Any] = [
    "openai" if f.name == "protocol" else None if f.default is MISSING else f.default
    for f in fields(AgentRequest)[: _EXTRA + 1]
]

#: Body fields that map one to one onto ``AgentRequest`` fields: their place, the type a valid
#: value usually has (taken as is, no call), and the check for anything else.
_FIELDS: dict[str, tuple[int, type | None, Callable[[str, Any], Any]]] = {
    name: (_ORDER.index(name), plain, check)
    for name, plain, check in (
        ("model", str, string), ("stream", bool, boolean), ("tools", None, _tools),
        ("tool_choice", None, _tool_choice), ("temperature", float, number),
        ("top_p", float, number), ("max_tokens", int, integer), ("stop", None, _stop),
        ("n", None, _choices), ("user", str, string),
    )
}  # fmt: skip


def parse_chat_request(
    data: dict[str, Any], default_model: str = DEFAULT_MODEL
) -> tuple[AgentRequest, bool]:
    """An ``AgentRequest`` from a parsed body, and whether the client asked for a usage chunk;
    a body that names no model gets ``default_model``."""
    model = data.get("model")
    stream = data.get("stream")
    messages = data.get("messages")
    if (
        # The usual body: messages, and model and stream if anything, of their usual types.
        len(data) == 1 + (model is not None) + (stream is not None)
        and type(messages) is list
        and messages
        and (model is None or type(model) is str)
        and (stream is None or type(stream) is bool)
    ):
        parsed = _messages(messages)
        return chat_request("openai", parsed, model or default_model, stream is True), False
    return _parse_any(data, default_model)


def _parse_any(data: dict[str, Any], default_model: str) -> tuple[AgentRequest, bool]:
    """Any body: one pass over the keys it has, not one lookup per known field."""
    args = _DEFAULTS.copy()
    extra: dict[str, Any] = {}
    messages: Any = None
    include_usage = False
    max_completion_tokens = None
    for key, value in data.items():
        spec = _FIELDS.get(key)
        if spec is not None:
            if value is not None:
                index, plain, check = spec
                args[index] = value if type(value) is plain else check(key, value)
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
    if type(messages) is not list or not messages:
        _refuse_messages(messages)
    args[_MESSAGES] = _messages(messages)
    if max_completion_tokens is not None and args[_MAX_TOKENS] is None:
        args[_MAX_TOKENS] = max_completion_tokens
    if not args[_MODEL]:
        args[_MODEL] = default_model
    args[_EXTRA] = extra
    return AgentRequest(*args), include_usage


def _messages(messages: list[Any]) -> list[Message]:
    parsed: list[Message] = []
    for raw in messages:
        # Role and text and nothing else (most messages): checked in line, no call. Anything
        # that is not a dict with a known role fails a lookup here and goes the long way.
        try:
            role = _ROLES[raw["role"]]
            content = raw["content"]
        except (KeyError, TypeError):
            content = None
        if type(content) is str and len(raw) == 2:
            parsed.append(Message(role, content))
        else:
            parsed.append(_parse_message(raw, len(parsed)))
    return parsed


def _refuse_messages(messages: Any) -> NoReturn:
    if messages is None:
        invalid("messages", "'messages' is required.")
    if not isinstance(messages, list):
        invalid("messages", f"'messages' must be an array, not {json_type(messages)}.")
    invalid("messages", "'messages' must contain at least one message.")


def _parse_message(raw: Any, i: int) -> Message:
    if not isinstance(raw, dict):
        invalid(f"messages[{i}]", f"'messages[{i}]' must be an object, not {json_type(raw)}.")
    raw_role = raw.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        invalid(
            f"messages[{i}].role",
            f"'messages[{i}].role' must be one of {_ROLE_NAMES}; "
            f"got {shown(raw_role)}.",
        )
    where = f"messages[{i}]"
    content = message_content(raw, where)
    calls = opt_list(raw, "tool_calls", f"{where}.tool_calls")
    tool_calls = (_function_call(raw, where) if calls is None
                  else parse_tool_calls(calls, f"{where}.tool_calls"))  # fmt: skip
    return Message(
        role=role,
        content=content,
        name=opt_str(raw, "name", f"{where}.name"),
        tool_calls=tool_calls,
        tool_call_id=opt_str(raw, "tool_call_id", f"{where}.tool_call_id"),
    )


def _function_call(raw: dict[str, Any], where: str) -> list[ToolCall] | None:
    """An assistant message's legacy ``function_call`` ({name, arguments}, deprecated for
    ``tool_calls`` but still in the API), as one call with no id: the ``function`` message that
    answers it names the function, not a call id."""
    at = f"{where}.function_call"
    call = opt_object(raw, "function_call", at)
    if call is None:
        return None
    return [ToolCall(id="", name=opt_str(call, "name", f"{at}.name") or "",
                     arguments=arguments_text(call.get("arguments", ""), f"{at}.arguments"))]


def _parse_tools(raw: list[Any] | None) -> list[Tool] | None:
    if raw is None:
        return None
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        kind = opt_str(item, "type", f"{at}.type") or "function"
        # OpenAI nests the definition under its type: "function", or "custom" for a free-form
        # tool ({name, description?, format?}; its format has no Tool field and is left out).
        # A flat {name, ...} is accepted too.
        key = "custom" if kind == "custom" else "function"
        spec = opt_object(item, key, f"{at}.{key}")
        if spec is None and "name" in item:
            spec = item  # the flat shape: an error names the field where the client put it
        else:
            spec = spec or item
            at = f"{at}.{key}"
        name = opt_str(spec, "name", f"{at}.name")
        if not name:
            invalid(f"{at}.name", f"'{at}.name' is required.")
        tools.append(
            Tool(
                name=name,
                description=opt_str(spec, "description", f"{at}.description"),
                parameters=opt_object(spec, "parameters", f"{at}.parameters"),
                type=kind,
            )
        )
    return tools
