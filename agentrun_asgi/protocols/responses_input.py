"""OpenAI Responses API input: a ``POST /v1/responses`` body parsed and checked by hand."""

from __future__ import annotations

from typing import Any

import orjson

from ..ids import new_id
from ..models import AgentRequest, Message, MessageRole, Tool, ToolCall
from .openai_input import DEFAULT_MODEL
from .validation import (
    invalid,
    json_type,
    opt_bool,
    opt_int,
    opt_list,
    opt_number,
    opt_object,
    opt_str,
    shown,
    too_deep,
)

_MESSAGE_ROLES = {
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
    "system": MessageRole.SYSTEM,
    "developer": MessageRole.DEVELOPER,
}
_KNOWN_FIELDS = frozenset(
    (
        "model", "input", "instructions", "stream", "tools", "tool_choice", "temperature",
        "top_p", "max_output_tokens", "user",
    )
)  # fmt: skip


def _new_id(prefix: str) -> str:
    return new_id(prefix)


# -- request parsing ---------------------------------------------------------------------------


def parse_responses_request(
    data: dict[str, Any], default_model: str = DEFAULT_MODEL
) -> AgentRequest:
    """An ``AgentRequest`` from a parsed ``POST /responses`` body; a body that names no model
    gets ``default_model``."""
    messages: list[Message] = []
    instructions = opt_str(data, "instructions")
    if instructions:
        messages.append(Message(role=MessageRole.SYSTEM, content=instructions))
    raw_input = data.get("input")
    if raw_input is None:
        invalid("input", "'input' is required: a string or an array of input items.")
    if isinstance(raw_input, str):
        messages.append(Message(role=MessageRole.USER, content=raw_input))
    elif isinstance(raw_input, list):
        for i, item in enumerate(raw_input):
            _add_input_item(messages, item, f"input[{i}]")
    else:
        invalid("input", f"'input' must be a string or an array, not {json_type(raw_input)}.")
    _check_fields(data)
    return AgentRequest(
        protocol="responses",
        messages=messages,
        model=opt_str(data, "model") or default_model,
        stream=bool(opt_bool(data, "stream")),
        tools=_parse_tools(opt_list(data, "tools")),
        tool_choice=_parse_tool_choice(data.get("tool_choice")),
        temperature=opt_number(data, "temperature"),
        top_p=opt_number(data, "top_p"),
        max_tokens=opt_int(data, "max_output_tokens"),
        user=opt_str(data, "user"),
        extra={k: v for k, v in data.items() if k not in _KNOWN_FIELDS},
    )


#: Fields no ``AgentRequest`` field checks, and the check that makes each what the API says it
#: is: the response object echoes the first five back, the agent reads the rest from ``extra``.
_FIELD_CHECKS = (("metadata", opt_object), ("text", opt_object), ("truncation", opt_str),
                 ("previous_response_id", opt_str), ("parallel_tool_calls", opt_bool),
                 ("store", opt_bool), ("reasoning", opt_object), ("stream_options", opt_object),
                 ("include", opt_list))  # fmt: skip


def _check_fields(data: dict[str, Any]) -> None:
    """Refuse what the response object would echo back wrong (a value of the wrong type, or
    nested deeper than orjson writes, which would fail only once the agent had run), and a
    field of the API the agent would find of the wrong type in ``extra``."""
    for key, check in _FIELD_CHECKS:
        check(data, key)
    text = data.get("text")
    if text:
        text_format = opt_object(text, "format", "text.format")
        if text_format is not None and not isinstance(text_format.get("type"), str):
            invalid("text.format.type", "'text.format.type' must be a string ('text', "
                    "'json_schema' or 'json_object').")  # fmt: skip
    reasoning = data.get("reasoning")
    if reasoning:
        opt_str(reasoning, "effort", "reasoning.effort")
        opt_str(reasoning, "summary", "reasoning.summary")
    options = data.get("stream_options")
    if options:
        opt_bool(options, "include_obfuscation", "stream_options.include_obfuscation")
    for key, value in (data.get("metadata") or {}).items():
        if not isinstance(value, str):  # typed clients read metadata as string to string
            invalid(f"metadata.{key}", f"'metadata.{key}' must be a string, not "
                    f"{json_type(value)}.")  # fmt: skip
    for i, value in enumerate(data.get("include") or ()):
        if not isinstance(value, str):
            invalid(f"include[{i}]", f"'include[{i}]' must be a string, not {json_type(value)}.")
    for key in ("tools", "tool_choice", "text"):  # metadata holds strings only
        value = data.get(key)
        if isinstance(value, (dict, list)):
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                too_deep(key)


def _add_input_item(messages: list[Message], item: Any, where: str) -> None:
    """Append the message ``item`` stands for (Chat Completions shape, which agents know)."""
    if not isinstance(item, dict):
        invalid(where, f"'{where}' must be an object, not {json_type(item)}.")
    kind = opt_str(item, "type", f"{where}.type")
    if kind == "function_call":
        call = ToolCall(
            id=_required_str(item, "call_id", where),
            name=_required_str(item, "name", where),
            arguments=opt_str(item, "arguments", f"{where}.arguments") or "",
        )
        last = messages[-1] if messages else None
        # Consecutive calls (and the text before them) are one assistant turn in Chat terms.
        if last is not None and last.role is MessageRole.ASSISTANT:
            last.tool_calls = [*(last.tool_calls or ()), call]
        else:
            messages.append(Message(role=MessageRole.ASSISTANT, tool_calls=[call]))
        return
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            content: str | list[dict[str, Any]] | None = _content_parts(output, f"{where}.output")
        elif isinstance(output, str):
            content = output
        else:
            invalid(
                f"{where}.output",
                f"'{where}.output' must be a string or an array, not {json_type(output)}.",
            )
        messages.append(Message(role=MessageRole.TOOL, content=content,
                                tool_call_id=_required_str(item, "call_id", where)))  # fmt: skip
        return
    if kind == "reasoning":
        return  # a previous answer's reasoning, sent back as context: nothing to tell the agent
    if kind == "item_reference":
        # Clients that think output is stored (the AI SDK's default store: true) send references
        # to their earlier items; say what to change, not only that the type is unknown.
        invalid(f"{where}.type", f"'{where}' is an item_reference, and this server keeps no "
                "items: send the item itself (clients do so with 'store': false).")  # fmt: skip
    if kind not in (None, "message"):
        invalid(f"{where}.type", f"'{where}.type' {kind!r} is not supported; use 'message', "
                "'function_call' or 'function_call_output'.")  # fmt: skip
    raw_role = item.get("role")
    role = _MESSAGE_ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(_MESSAGE_ROLES)}; "
                f"got {shown(raw_role)}.")  # fmt: skip
    raw_content = item.get("content")
    item_id = opt_str(item, "id", f"{where}.id")
    if isinstance(raw_content, str):
        messages.append(Message(role=role, content=raw_content, id=item_id))
    elif isinstance(raw_content, list):
        parts = _content_parts(raw_content, f"{where}.content")
        messages.append(Message(role=role, content=parts, id=item_id))
    else:
        invalid(f"{where}.content", f"'{where}.content' must be a string or an array, "
                f"not {json_type(raw_content)}.")  # fmt: skip


def _content_parts(raw: list[Any], where: str) -> list[dict[str, Any]]:
    """Responses content parts as Chat Completions parts, so ``Message.text`` reads them."""
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            invalid(at, f"'{at}' must be an object with a string 'type'.")
        kind = part["type"]
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                invalid(f"{at}.text", f"'{at}.text' must be a string, not {json_type(text)}.")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image" and part.get("image_url") is not None:
            url = part["image_url"]
            if not isinstance(url, str):
                invalid(f"{at}.image_url", f"'{at}.image_url' must be a string, not "
                        f"{json_type(url)}.")  # fmt: skip
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append(part)  # files, refusals, images by file id: the agent's to read
    return parts


def _required_str(item: dict[str, Any], key: str, where: str) -> str:
    value = opt_str(item, key, f"{where}.{key}")
    if not value:
        invalid(f"{where}.{key}", f"'{where}.{key}' is required.")
    return value


def _parse_tools(raw: list[Any] | None) -> list[Tool] | None:
    if raw is None:
        return None
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        kind = opt_str(item, "type", f"{at}.type") or "function"
        # Responses function tools are flat: {type, name, description, parameters, strict}.
        name = opt_str(item, "name", f"{at}.name")
        if kind == "function" and not name:
            invalid(f"{at}.name", f"'{at}.name' is required for a function tool.")
        tools.append(
            Tool(
                name=name or kind,  # built-in tools (web_search...) have a type and no name
                description=opt_str(item, "description", f"{at}.description"),
                parameters=opt_object(item, "parameters", f"{at}.parameters"),
                type=kind,
            )
        )
    return tools


def _parse_tool_choice(value: Any) -> str | dict[str, Any] | None:
    if value is None or isinstance(value, (str, dict)):
        return value
    invalid("tool_choice", f"'tool_choice' must be a string or an object, not {json_type(value)}.")
