"""OpenAI Chat Completions: ``POST {prefix}/chat/completions`` and ``GET {prefix}/models``.

Wire format per the OpenAI API reference ("Create chat completion", "The chat completion chunk
object"); ../shared/PROTOCOLS.md sums up the parts the official clients depend on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import orjson

from ..errors import ProtocolError
from ..ids import new_id
from ..invoker import aclose, expand
from ..models import AgentEvent, AgentRequest, EventType, Message, MessageRole, Tool, ToolCall
from ..requests import Request, header
from ..responses import JSON_HEADERS, send_bytes, send_error
from ..routing import Route
from ..streaming import error_message, run_stream
from ..types import Send
from .base import ProtocolHandler
from .validation import (
    invalid,
    json_type,
    opt_bool,
    opt_int,
    opt_list,
    opt_number,
    opt_object,
    opt_str,
    parse_object,
)

logger = logging.getLogger("agentrun_asgi")

DEFAULT_MODEL = "agentrun"
_ROLES = {role.value: role for role in MessageRole}
_ROLE_NAMES = ", ".join(_ROLES)
_KNOWN_FIELDS = frozenset(
    (
        "model", "messages", "stream", "stream_options", "tools", "tool_choice", "temperature",
        "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "user",
    )
)  # fmt: skip
_dumps = orjson.dumps


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
            f"'{where}.role' must be one of {_ROLE_NAMES}; "
            f"got {orjson.dumps(raw_role).decode()}.",
        )
    content = raw.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                invalid(
                    f"{where}.content[{j}]",
                    f"'{where}.content[{j}]' must be an object with a string 'type'.",
                )
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                invalid(
                    f"{where}.content[{j}].text",
                    f"'{where}.content[{j}].text' must be a string, "
                    f"not {json_type(part.get('text'))}.",
                )
    elif content is not None and not isinstance(content, str):
        invalid(
            f"{where}.content",
            f"'{where}.content' must be a string, an array of parts or null, "
            f"not {json_type(content)}.",
        )
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


# -- encoding ----------------------------------------------------------------------------------


def _error_object(message: str, code: str | None, type_: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class ChatStreamEncoder:
    """Sans-IO encoder of one ``chat.completion.chunk`` stream.

    Everything that is the same in every chunk (id, created, model, the SSE framing) is rendered
    once here; a text chunk is then a join of constant bytes around one ``orjson.dumps``.
    """

    __slots__ = (
        "_close",
        "_first",
        "_head",
        "_include_usage",
        "_open",
        "_tools",
        "done",
        "finish_reason",
        "usage",
    )  # fmt: skip

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        head = _dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created,
             "model": model}
        )[:-1]  # fmt: skip
        self._head = b"data: " + head
        self._open = self._head + b',"choices":[{"index":0,"delta":'
        # With include_usage every chunk carries "usage":null (API reference, stream_options).
        usage_null = b',"usage":null' if include_usage else b""
        self._close = b',"finish_reason":null}]' + usage_null + b"}\n\n"
        # The first delta carries the role along with its content: no role-only chunk.
        self._first = True
        self._tools: dict[str, int] = {}
        self._include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.done = False

    def encode(self, item: str | AgentEvent) -> bytes:
        if type(item) is str:
            if not item:
                return b""
            if self._first:
                self._first = False
                lead = b'{"role":"assistant","content":'
            else:
                lead = b'{"content":'
            return b"".join((self._open, lead, _dumps(item), b"}", self._close))
        return self._encode_event(item)  # type: ignore[arg-type]

    def _delta(self, delta: dict[str, Any], addition: dict[str, Any] | None) -> bytes:
        if addition:
            delta = {**delta, **addition}
        if self._first:
            self._first = False
            delta = {"role": "assistant", **delta}
        return b"".join((self._open, _dumps(delta), self._close))

    def _encode_event(self, ev: AgentEvent) -> bytes:
        data = ev.data
        kind = ev.event
        usage = data.get("usage")
        if usage is not None:
            self.usage = usage
        if data.get("finish_reason") is not None:
            self.finish_reason = data["finish_reason"]
        if kind == EventType.TEXT:
            delta = data.get("delta")
            if not delta:
                return b""
            if ev.addition is None:
                return self.encode(str(delta))
            return self._delta({"content": delta}, ev.addition)
        if kind == EventType.REASONING:
            delta = data.get("delta")
            return self._delta({"reasoning_content": delta}, ev.addition) if delta else b""
        if kind == EventType.TOOL_CALL:
            args = data.get("args", "")
            return self._tool_call(data.get("id"), data.get("name"), args, ev.addition)
        if kind == EventType.TOOL_CALL_CHUNK:
            return self._tool_call(data.get("id"), data.get("name"), data.get("args_delta", ""),
                                   ev.addition)  # fmt: skip
        if kind == EventType.RAW:
            raw = str(data.get("raw", ""))
            if not raw.endswith("\n\n"):
                raw += "\n\n"  # keep the next frame parseable
            return raw.encode()
        if kind == EventType.ERROR:
            return self.error(str(data.get("message") or "agent error"), data.get("code"))
        # TOOL_RESULT, STATE, CUSTOM, HITL: Chat Completions has no place for them.
        return b""

    def _tool_call(
        self, call_id: Any, name: Any, args: Any, addition: dict[str, Any] | None
    ) -> bytes:
        if not isinstance(args, str):
            args = _dumps(args).decode()
        call_id = str(call_id) if call_id else new_id("call_")
        index = self._tools.get(call_id)
        out = b""
        if index is None:
            index = self._tools[call_id] = len(self._tools)
            start = {"index": index, "id": call_id, "type": "function",
                     "function": {"name": str(name or ""), "arguments": ""}}  # fmt: skip
            out = self._delta({"tool_calls": [start]}, addition)
            addition = None
        if args:
            fragment = {"index": index, "function": {"arguments": args}}
            out += self._delta({"tool_calls": [fragment]}, addition)
        return out

    def close(self) -> bytes:
        reason = self.finish_reason or ("tool_calls" if self._tools else "stop")
        delta = b'{"role":"assistant"}' if self._first else b"{}"
        out = b"".join(
            (self._open, delta, b',"finish_reason":', _dumps(reason), b"}]",
             b',"usage":null' if self._include_usage else b"", b"}\n\n")
        )  # fmt: skip
        if self._include_usage:
            usage = self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out += b"".join((self._head, b',"choices":[],"usage":', _dumps(usage), b"}\n\n"))
        self.done = True
        return out + b"data: [DONE]\n\n"

    def error(self, message: str, code: str | None = None) -> bytes:
        self.done = True
        return b"data: " + _dumps(_error_object(message, code)) + b"\n\n"


class ChatCompletionCollector:
    """Gathers a whole stream into one ``chat.completion`` object (non-stream responses)."""

    __slots__ = ("content", "error", "finish_reason", "reasoning", "tool_calls", "usage")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[str, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: tuple[str, str | None] | None = None

    def add(self, item: str | AgentEvent) -> None:
        if type(item) is str:
            self.content.append(item)
            return
        ev: AgentEvent = item  # type: ignore[assignment]
        data = ev.data
        if data.get("usage") is not None:
            self.usage = data["usage"]
        if data.get("finish_reason") is not None:
            self.finish_reason = data["finish_reason"]
        kind = ev.event
        if kind == EventType.TEXT:
            self.content.append(str(data.get("delta") or ""))
        elif kind == EventType.REASONING:
            self.reasoning.append(str(data.get("delta") or ""))
        elif kind == EventType.TOOL_CALL or kind == EventType.TOOL_CALL_CHUNK:
            args = data.get("args" if kind == EventType.TOOL_CALL else "args_delta", "")
            if not isinstance(args, str):
                args = _dumps(args).decode()
            call_id = str(data.get("id") or new_id("call_"))
            call = self.tool_calls.get(call_id)
            if call is None:
                call = self.tool_calls[call_id] = {
                    "id": call_id, "type": "function",
                    "function": {"name": str(data.get("name") or ""), "arguments": ""},
                }  # fmt: skip
            elif data.get("name") and not call["function"]["name"]:
                call["function"]["name"] = str(data["name"])
            call["function"]["arguments"] += args
        elif kind == EventType.ERROR:
            self.error = (str(data.get("message") or "agent error"), data.get("code"))

    def body(self, completion_id: str, created: int, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls.values())
            if not message["content"]:
                message["content"] = None
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        reason = self.finish_reason or ("tool_calls" if self.tool_calls else "stop")
        usage = self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason,
                         "logprobs": None}],
            "usage": usage,
        }  # fmt: skip


# -- the handler -------------------------------------------------------------------------------


class OpenAIProtocolHandler(ProtocolHandler):
    """Chat Completions (JSON or SSE) and the model list, at ``/v1`` by default."""

    name = "openai"

    def __init__(
        self, models: Sequence[str] = (DEFAULT_MODEL,), owned_by: str = "agentrun"
    ) -> None:
        created = int(time.time())
        self._models_body = _dumps(
            {"object": "list",
             "data": [{"id": m, "object": "model", "created": created, "owned_by": owned_by}
                      for m in models]}
        )  # fmt: skip

    def get_prefix(self) -> str | None:
        return "/v1"

    def routes(self) -> Sequence[Route]:
        return (
            Route("/chat/completions", self.chat_completions, ("POST",), "openai.chat_completions"),
            Route("/models", self.list_models, ("GET",), "openai.models"),
        )

    async def list_models(self, request: Request, send: Send) -> None:
        await send_bytes(send, 200, self._models_body, JSON_HEADERS)

    async def chat_completions(self, request: Request, send: Send) -> None:
        data = parse_object(await request.body(), header(request.scope, b"content-type"))
        agent_request, include_usage = parse_chat_request(data)
        agent_request.raw_request = request
        completion_id = new_id("chatcmpl-")
        created = int(time.time())
        model: str = agent_request.model  # type: ignore[assignment]
        if agent_request.stream:
            encoder = ChatStreamEncoder(completion_id, created, model, include_usage)
            await run_stream(request, send, self.invoker.open(agent_request), encoder)
            return
        collector = ChatCompletionCollector()
        items: AsyncIterator[Any] | None = None
        payload = b""
        try:
            items = await self.invoker.open(agent_request)
            content = collector.content
            async for item in items:
                if type(item) is str:
                    content.append(item)
                    continue
                for event in (item,) if type(item) is AgentEvent else expand(item):
                    collector.add(event)
                if collector.error is not None:
                    break
            if collector.error is None:
                try:
                    payload = _dumps(collector.body(completion_id, created, model))
                except TypeError as exc:
                    unsendable = f"the agent emitted an item that cannot be sent: {exc}"
                    collector.error = (unsendable, None)
                    raise
        except Exception as exc:
            logger.exception("agent failed")
            if collector.error is None:
                collector.error = (error_message(exc), None)
        except BaseException:
            if items is not None:
                with anyio.CancelScope(shield=True):
                    await aclose(items)
            raise
        if items is not None and collector.error is not None:
            await aclose(items)  # stopped early: let the agent's generator clean up
        if collector.error is not None:
            message, code = collector.error
            await send_error(send, ProtocolError(500, message, code=code))
            return
        await send_bytes(send, 200, payload, JSON_HEADERS)
