"""The data an agent sees and produces: plain slotted dataclasses, no validation library.

Names and event data keys follow the AgentRun server SDK, so an agent written for it moves over
with an import change. Parsing into these types is each protocol's job (``protocols/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .requests import Request


class MessageRole(str, Enum):
    """Chat roles shared by OpenAI Chat Completions and AG-UI."""

    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    FUNCTION = "function"  # OpenAI's legacy role, still accepted on input

    def __str__(self) -> str:
        return self.value


class EventType(str, Enum):
    """What an agent can emit. A bare ``str`` yielded by an agent is ``TEXT``.

    The data keys of each type (README, "Events"):
    TEXT/REASONING ``{delta}``; TOOL_CALL ``{id, name, args}``; TOOL_CALL_CHUNK
    ``{id, name?, args_delta}``; TOOL_RESULT ``{id, result}``; TOOL_RESULT_CHUNK ``{id, delta}``;
    STATE ``{snapshot}`` or ``{delta}``; CUSTOM ``{name, value}``; RAW ``{raw}``;
    ERROR ``{message, code?}``; HITL ``{id, type, prompt, tool_call_id?, options?, schema?}``.
    Any event may also carry ``usage`` in its data; the last one seen is the run's usage.
    """

    TEXT = "TEXT"
    REASONING = "REASONING"
    TOOL_CALL = "TOOL_CALL"
    TOOL_CALL_CHUNK = "TOOL_CALL_CHUNK"
    TOOL_RESULT = "TOOL_RESULT"
    TOOL_RESULT_CHUNK = "TOOL_RESULT_CHUNK"
    STATE = "STATE"
    CUSTOM = "CUSTOM"
    RAW = "RAW"
    ERROR = "ERROR"
    HITL = "HITL"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class AgentEvent:
    """One thing the agent emits; ``addition`` is merged into the protocol's own payload."""

    event: EventType
    data: dict[str, Any] = field(default_factory=dict)
    addition: dict[str, Any] | None = None


#: The AgentRun SDK's name for the same thing.
AgentResult = AgentEvent


@dataclass(slots=True)
class ToolCall:
    """A function call the assistant makes; ``arguments`` is a JSON string, as on the wire."""

    id: str
    name: str
    arguments: str = ""
    type: str = "function"


@dataclass(slots=True)
class Tool:
    """A tool the client offers the agent (OpenAI ``tools[].function`` or an AG-UI tool)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    type: str = "function"


@dataclass(slots=True)
class Message:
    """One chat message; ``content`` is a string, None, or OpenAI's list of content parts.

    ``error`` is set on a tool message whose tool failed (AG-UI's ``ToolMessage.error``), so an
    agent can tell a failure from a result.
    """

    role: MessageRole
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    id: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        """The content as plain text: text parts joined, other parts (images...) left out."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)


@dataclass(slots=True)
class AgentRequest:
    """What the agent is asked, the same for every protocol.

    Fields a protocol does not carry keep their defaults; every body field that no field here
    takes is kept in ``extra``, untouched.
    """

    protocol: str = ""
    messages: list[Message] = field(default_factory=list)
    model: str | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # AG-UI run input
    thread_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    state: Any = None
    context: list[dict[str, Any]] | None = None
    forwarded_props: Any = None
    resume: list[dict[str, Any]] | None = None
    raw_request: Request | None = None

    @property
    def last_user_message(self) -> Message | None:
        for message in reversed(self.messages):
            if message.role is MessageRole.USER:
                return message
        return None


# -- made without calling the class ------------------------------------------------------------
# On CPython 3.11 ``AgentRequest(...)`` costs ~4.5k instructions and the same fields set on an
# ``object.__new__`` instance ~3.5k: the class call and the 18 defaults passed through the
# generated __init__ are the difference. The OpenAI parser makes one per JSON request through
# the builder below; tests/test_openai_input.py holds it equal to the class call, field for
# field, so a field added to the class and not here fails there.

_new = object.__new__


def chat_request(protocol: str, messages: list[Message], model: str, stream: bool) -> AgentRequest:
    """``AgentRequest(protocol, messages, model, stream)``."""
    request: AgentRequest = _new(AgentRequest)
    request.protocol = protocol
    request.messages = messages
    request.model = model
    request.stream = stream
    request.extra = {}
    request.tools = request.tool_choice = request.temperature = request.top_p = None
    request.max_tokens = request.stop = request.n = request.user = None
    request.thread_id = request.run_id = request.parent_run_id = request.state = None
    request.context = request.forwarded_props = request.resume = request.raw_request = None
    return request


@dataclass(slots=True)
class AgentResponse:
    """A whole answer at once; streamed protocols send it as the equivalent events."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | list[dict[str, Any]] | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    events: list[AgentEvent] | None = None

    def to_events(self) -> list[AgentEvent]:
        """The events this response stands for, in wire order: reasoning, text, tool calls."""
        out: list[AgentEvent] = list(self.events or ())
        if self.reasoning_content:
            out.append(AgentEvent(EventType.REASONING, {"delta": self.reasoning_content}))
        if self.content:
            out.append(AgentEvent(EventType.TEXT, {"delta": self.content}))
        for call in self.tool_calls or ():
            out.append(AgentEvent(EventType.TOOL_CALL, _tool_call_data(call)))
        if self.usage is not None or self.finish_reason is not None:
            # Run-level facts ride on an empty TEXT delta, which every encoder skips as text.
            tail: dict[str, Any] = {"delta": ""}
            if self.usage is not None:
                tail["usage"] = self.usage
            if self.finish_reason is not None:
                tail["finish_reason"] = self.finish_reason
            out.append(AgentEvent(EventType.TEXT, tail))
        return out


def text_of(value: Any) -> str:
    """A value the wire carries as text (a call's arguments or a fragment of them, a text or
    reasoning delta, a tool's result): a string as is, ``None`` as no text (OpenAI's deltas send
    ``"arguments": null`` so; encoding it would put the text ``null`` into the call's JSON),
    anything else as its JSON, the same on every protocol."""
    if isinstance(value, str):
        return value
    return "" if value is None else orjson.dumps(value).decode()


def _tool_call_data(call: ToolCall | dict[str, Any]) -> dict[str, Any]:
    """TOOL_CALL data for a ``ToolCall``, or for a dict an agent returned instead.

    A dict may be flat (``{id, name, arguments}``) or OpenAI's ``{id, type, function: {name,
    arguments}}``; arguments that are not a string are JSON-encoded, as they are on the wire.
    """
    call_id: Any
    name: Any
    args: Any
    if isinstance(call, ToolCall):
        call_id, name, args = call.id, call.name, call.arguments
    elif isinstance(call, dict):
        function = call.get("function")
        spec = function if isinstance(function, dict) else call
        call_id = call.get("id")
        name = spec.get("name")
        args = spec.get("arguments", spec.get("args", ""))
    else:
        raise TypeError(
            f"AgentResponse.tool_calls items must be ToolCall or dict, not {type(call).__name__}"
        )
    return {"id": call_id, "name": name, "args": text_of(args)}
