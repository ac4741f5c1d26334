"""AG-UI 1.0 input: ``RunAgentInput`` parsed from the raw body and checked by hand.

Lenient as the AgentRun SDK's server is: missing ids are generated, unknown fields go
to ``extra``; only wrong types, unknown roles and unknown resume statuses are refused, with
a 400 naming the field.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ..ids import new_id
from ..models import AgentRequest, Message, MessageRole, Tool
from .validation import (
    invalid,
    json_type,
    message_content,
    opt_list,
    opt_str,
    parse_tool_calls,
    shown,
)

_dumps = orjson.dumps
_ROLES = {
    r.value: r
    for r in (MessageRole.USER, MessageRole.ASSISTANT, MessageRole.SYSTEM, MessageRole.TOOL,
              MessageRole.DEVELOPER)
}  # fmt: skip
# 1.0 roles a client may echo back in its history that are UI records, not chat turns: they are
# accepted and left out of ``AgentRequest.messages`` (the raw body still has them).
_UI_ROLES = frozenset(("reasoning", "activity"))
_ROLE_NAMES = ", ".join((*_ROLES, *sorted(_UI_ROLES)))
_RESUME_STATUSES = frozenset(("resolved", "cancelled"))
_KNOWN_FIELDS = frozenset(
    ("threadId", "runId", "parentRunId", "state", "messages", "tools", "context",
     "forwardedProps", "resume", "protocolVersion")
)  # fmt: skip


def _new_id(prefix: str) -> str:
    return new_id(prefix)


# -- request parsing ---------------------------------------------------------------------------


def parse_run_input(data: dict[str, Any]) -> AgentRequest:
    """An ``AgentRequest`` from a parsed ``RunAgentInput``; lenient as the AgentRun SDK is.

    Missing ``threadId``/``runId`` are generated, message ids are optional, unknown fields go
    to ``extra``; only wrong types and unknown roles are refused (400).
    """
    messages = opt_list(data, "messages") or []
    resume = opt_list(data, "resume")
    context = opt_list(data, "context")
    if context is not None:
        _check_context(context)
    return AgentRequest(
        protocol="agui",
        messages=[m for i, raw in enumerate(messages) if (m := _parse_message(raw, i)) is not None],
        stream=True,
        tools=_parse_tools(opt_list(data, "tools")),
        thread_id=opt_str(data, "threadId") or str(uuid.uuid4()),
        run_id=opt_str(data, "runId") or str(uuid.uuid4()),
        parent_run_id=opt_str(data, "parentRunId"),
        state=data.get("state"),
        context=context,
        forwarded_props=data.get("forwardedProps"),
        resume=_parse_resume(resume) if resume is not None else None,
        extra={k: v for k, v in data.items() if k not in _KNOWN_FIELDS},
    )


def _parse_message(raw: Any, i: int) -> Message | None:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        invalid(where, f"'{where}' must be an object, not {json_type(raw)}.")
    name = raw.get("role")
    role = _ROLES.get(name) if isinstance(name, str) else None
    if role is None:
        if isinstance(name, str) and name in _UI_ROLES:
            return None
        got = shown(name)
        invalid(f"{where}.role", f"'{where}.role' must be one of {_ROLE_NAMES}; got {got}.")
    content = message_content(raw, where)
    calls = opt_list(raw, "toolCalls", f"{where}.toolCalls")
    return Message(
        role=role,
        content=content,
        name=opt_str(raw, "name", f"{where}.name"),
        tool_calls=None if calls is None else parse_tool_calls(calls, f"{where}.toolCalls"),
        tool_call_id=opt_str(raw, "toolCallId", f"{where}.toolCallId"),
        id=opt_str(raw, "id", f"{where}.id"),
        error=opt_str(raw, "error", f"{where}.error"),
    )


def _parse_tools(raw: list[Any] | None) -> list[Tool] | None:
    if raw is None:
        return None
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        # AG-UI tools are flat {name, description, parameters}; OpenAI's nested shape is accepted.
        nested = isinstance(item.get("function"), dict)
        spec = item["function"] if nested else item
        if nested:
            at += ".function"  # an error names the field where the client put it
        name = opt_str(spec, "name", f"{at}.name")
        if not name:
            invalid(f"{at}.name", f"'{at}.name' is required.")
        # ``parameters`` is any JSON Schema, carried opaquely (1.0 schema: Tool.parameters).
        tools.append(Tool(name=name, description=opt_str(spec, "description", f"{at}.description"),
                          parameters=spec.get("parameters")))  # fmt: skip
    return tools


def _check_context(raw: list[Any]) -> None:
    """Context entries are ``{description, value}`` strings (1.0 ``Context``): an agent puts
    them in its prompt as text, so an object there is refused, not passed on."""
    for i, item in enumerate(raw):
        at = f"context[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        opt_str(item, "description", f"{at}.description")
        opt_str(item, "value", f"{at}.value")


def _parse_resume(raw: list[Any]) -> list[dict[str, Any]]:
    """Resume entries as sent (``{interruptId, status, payload?}``), type-checked.

    ``status`` is one of the 1.0 schema's two values: an agent that tests for "resolved" would
    otherwise read a misspelt answer ("approved") as an abandoned interrupt.
    """
    for i, item in enumerate(raw):
        at = f"resume[{i}]"
        if not isinstance(item, dict):
            invalid(at, f"'{at}' must be an object, not {json_type(item)}.")
        opt_str(item, "interruptId", f"{at}.interruptId")
        status = opt_str(item, "status", f"{at}.status")
        if status is not None and status not in _RESUME_STATUSES:
            got = _dumps(status).decode()
            invalid(f"{at}.status", f"'{at}.status' must be resolved or cancelled; got {got}.")
    return raw
