"""OpenAI Chat Completions: ``POST {prefix}/chat/completions``, ``GET {prefix}/models[/{model}]``.

Wire format per the OpenAI API reference ("Create chat completion", "The chat completion chunk
object").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from types import AsyncGeneratorType
from typing import Any

import anyio
import orjson

from ..errors import NO_RETRY, ProtocolError
from ..guard import raise_if_stopped
from ..ids import new_id
from ..invoker import aclose, agent_error, expand
from ..models import AgentEvent, EventType, text_of
from ..requests import Request
from ..responses import JSON_HEADERS, send_bytes, send_error, sends_request_id
from ..routing import Route
from ..streaming import error_message, run_stream, unsendable
from ..types import Send
from .base import ProtocolHandler
from .openai_input import DEFAULT_MODEL, parse_chat_request
from .validation import parse_object

logger = logging.getLogger("agentrun_asgi")

_dumps = orjson.dumps
#: Read only: shared by every response (Chat Completions and Responses) with no usage of its own.
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


# -- encoding ----------------------------------------------------------------------------------


def chat_usage(usage: Any) -> Any:
    """The agent's usage with the three counts Chat Completions has (the client types each as
    an int): a missing (or null) total is the sum, and the Responses shape (``input_tokens``,
    ``output_tokens``) is read too. Complete usage, or anything that is not a dict, is as is."""
    if type(usage) is not dict or (
        usage.get("total_tokens") is not None
        and usage.get("prompt_tokens") is not None
        and usage.get("completion_tokens") is not None
    ):
        return usage
    prompt = usage.get("prompt_tokens")
    if prompt is None:
        prompt = usage.get("input_tokens") or 0
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = usage.get("output_tokens") or 0
    total = usage.get("total_tokens")
    if total is None:
        numbers = type(prompt) is int and type(completion) is int
        total = prompt + completion if numbers else 0
    return {**usage, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": total}  # fmt: skip


def tool_call_id(given: Any, last: str | None, whole: bool) -> str:
    """The call an event is for: its own id; else, for a chunk, the last call seen (OpenAI's
    deltas and the AgentRun SDK give the id on a call's first chunk only); else a new id."""
    if given:
        return str(given)
    if last is not None and not whole:
        return last
    return new_id("call_")


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
        "_held",
        "_include_usage",
        "_last_call",
        "_open",
        "_tools",
        "_unnamed",
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
        #: Calls given before their name, not started yet: their arguments and additions.
        #: OpenAI names a call in its first delta, and some clients (the Vercel AI SDK) fail on
        #: a nameless one; a call is started unnamed only when a later call starts first
        #: (clients index calls in the order they start) or the stream ends, and then its
        #: name, if it comes, follows as a delta of its own.
        self._held: dict[str, tuple[list[str], dict[str, Any]]] | None = None
        self._unnamed: set[str] | None = None  # calls started before their name came
        self._last_call: str | None = None
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
                return self.encode(delta if type(delta) is str else text_of(delta))
            return self._delta({"content": text_of(delta)}, ev.addition)
        if kind == EventType.REASONING:
            delta = data.get("delta")
            return self._delta({"reasoning_content": text_of(delta)}, ev.addition) if delta else b""
        if kind == EventType.TOOL_CALL:
            args = data.get("args", "")
            return self._tool_call(data.get("id"), data.get("name"), args, ev.addition, True)
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
        self, call_id: Any, name: Any, args: Any, addition: dict[str, Any] | None,
        whole: bool = False,
    ) -> bytes:  # fmt: skip
        args = text_of(args)
        call_id = self._last_call = tool_call_id(call_id, self._last_call, whole)
        index = self._tools.get(call_id)
        if index is None:
            held = self._held.get(call_id) if self._held else None
            if not name:  # no name yet: hold the call until one comes
                if addition:
                    _dumps(addition)  # one that cannot be sent fails here, not at the end
                if held is None:
                    held = ([], {})
                    if self._held is None:
                        self._held = {}
                    self._held[call_id] = held
                    if whole and not args:
                        args = "{}"  # as _start_call gives a whole call with no arguments
                if args:
                    held[0].append(args)
                if addition:
                    held[1].update(addition)
                return b""
            out = self._release_held(call_id) if self._held else b""
            if held is not None:
                args = "".join(held[0]) + args
                addition = {**held[1], **addition} if addition else held[1] or None
                whole = False  # its first arguments are held ones
            return out + self._start_call(call_id, name, args, addition, whole)
        if name and self._unnamed and call_id in self._unnamed:
            # Started unnamed: the name follows, and the client appends it to the empty one.
            self._unnamed.discard(call_id)
            function = {"name": str(name), "arguments": args}
            return self._delta({"tool_calls": [{"index": index, "function": function}]}, addition)
        if args:
            function = {"arguments": args}
            return self._delta({"tool_calls": [{"index": index, "function": function}]}, addition)
        return b""

    def _start_call(self, call_id: str, name: Any, args: str, addition: dict[str, Any] | None,
                    whole: bool) -> bytes:  # fmt: skip
        # Indexed as it starts: clients take a new index as the next call of their list.
        index = self._tools[call_id] = len(self._tools)
        start = {"index": index, "id": call_id, "type": "function",
                 "function": {"name": str(name or ""), "arguments": ""}}  # fmt: skip
        out = self._delta({"tool_calls": [start]}, addition)
        if whole and not args:
            args = "{}"  # a whole call with no arguments: OpenAI sends an empty object
        if args:
            function = {"arguments": args}
            out += self._delta({"tool_calls": [{"index": index, "function": function}]}, None)
        return out

    def _release_held(self, until: str | None = None) -> bytes:
        """Start, unnamed, the held calls given before ``until`` (all of them without it, as
        the stream ends); ``until`` itself leaves the hold, to be started by the caller."""
        held = self._held
        assert held is not None
        out = []
        for call_id in list(held):
            parts, extra = held.pop(call_id)
            if call_id == until:
                break  # the caller has its parts
            if self._unnamed is None:
                self._unnamed = set()
            self._unnamed.add(call_id)
            out.append(self._start_call(call_id, "", "".join(parts), extra or None, False))
        if not held:
            self._held = None
        return b"".join(out)

    def close(self) -> bytes:
        held = self._release_held() if self._held else b""
        reason = self.finish_reason or ("tool_calls" if self._tools else "stop")
        delta = b'{"role":"assistant"}' if self._first else b"{}"
        out = b"".join(
            (held, self._open, delta, b',"finish_reason":', _dumps(reason), b"}]",
             b',"usage":null' if self._include_usage else b"", b"}\n\n")
        )  # fmt: skip
        if self._include_usage:
            usage = chat_usage(self.usage) if self.usage is not None else ZERO_USAGE
            out += b"".join((self._head, b',"choices":[],"usage":', _dumps(usage), b"}\n\n"))
        self.done = True
        return out + b"data: [DONE]\n\n"

    def error(self, message: str, code: str | None = None) -> bytes:
        self.done = True
        held = self._release_held() if self._held else b""
        return held + b"data: " + _dumps(_error_object(message, code)) + b"\n\n"


class ChatCompletionCollector:
    """Gathers a whole stream into one ``chat.completion`` object (non-stream responses)."""

    __slots__ = ("_last_call", "content", "error", "finish_reason", "reasoning", "tool_calls",
                 "usage")  # fmt: skip

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[str, dict[str, Any]] = {}
        self._last_call: str | None = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: tuple[str, str | None] | None = None

    def add_all(self, raw: list[Any]) -> None:
        """Add a run's raw items (expanding any shape), up to its first error event."""
        for value in raw:
            ready = type(value) is str or type(value) is AgentEvent
            for item in (value,) if ready else expand(value):
                self.add(item)
                if self.error is not None:
                    return

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
            self.content.append(text_of(data.get("delta") or ""))
        elif kind == EventType.REASONING:
            self.reasoning.append(text_of(data.get("delta") or ""))
        elif kind == EventType.TOOL_CALL or kind == EventType.TOOL_CALL_CHUNK:
            args = text_of(data.get("args" if kind == EventType.TOOL_CALL else "args_delta"))
            whole = kind == EventType.TOOL_CALL
            call_id = self._last_call = tool_call_id(data.get("id"), self._last_call, whole)
            call = self.tool_calls.get(call_id)
            if call is None:
                if not args and whole:
                    args = "{}"  # a whole call with no arguments: OpenAI sends an empty object
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
        usage = chat_usage(self.usage) if self.usage is not None else None
        return completion(completion_id, created, model, message, reason, usage)


def completion(
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    reason: str = "stop",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object (a run of plain text needs no collector to make one)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": usage or ZERO_USAGE,
    }


# -- the handler -------------------------------------------------------------------------------


class OpenAIProtocolHandler(ProtocolHandler):
    """Chat Completions (JSON or SSE) and the model list, at ``/v1`` by default."""

    name = "openai"

    def __init__(
        self, models: Sequence[str] = (DEFAULT_MODEL,), owned_by: str = "agentrun"
    ) -> None:
        created = int(time.time())
        listed = [{"id": m, "object": "model", "created": created, "owned_by": owned_by}
                  for m in models]  # fmt: skip
        self._models_body = _dumps({"object": "list", "data": listed})
        #: ``GET /models/{model}`` (ids may hold a slash): each model's object, encoded once.
        self._model_bodies = {model["id"]: _dumps(model) for model in listed}
        #: The model a response names when its request names none: one the list has.
        self.default_model = models[0] if models else DEFAULT_MODEL

    def get_prefix(self) -> str | None:
        return "/v1"

    def routes(self) -> Sequence[Route]:
        return (
            Route("/chat/completions", self.chat_completions, ("POST",), "openai.chat_completions"),
            Route("/models", self.list_models, ("GET",), "openai.models"),
            # Rest of the path: the official client sends an id like "org/agent" as org%2Fagent,
            # which the ASGI server decodes into two segments.
            Route("/models/{model:path}", self.retrieve_model, ("GET",), "openai.model"),
        )

    @sends_request_id
    async def list_models(self, request: Request, send: Send) -> None:
        await send_bytes(send, 200, self._models_body, JSON_HEADERS)

    @sends_request_id
    async def retrieve_model(self, request: Request, send: Send) -> None:
        model: str = request.scope["path_params"]["model"]
        body = self._model_bodies.get(model)
        if body is None:
            # OpenAI answers an unknown id with 404 and this code; clients raise NotFoundError.
            message = f"The model `{model}` does not exist."
            await send_error(send, ProtocolError(404, message, code="model_not_found"))
            return
        await send_bytes(send, 200, body, JSON_HEADERS)

    @sends_request_id
    async def chat_completions(self, request: Request, send: Send) -> None:
        data = parse_object(await request.body(), request.scope)
        agent_request, include_usage = parse_chat_request(data, self.default_model)
        agent_request.raw_request = request
        completion_id = new_id("chatcmpl-")
        created = int(time.time())
        model: str = agent_request.model  # type: ignore[assignment]
        if agent_request.stream:
            encoder = ChatStreamEncoder(completion_id, created, model, include_usage)
            await run_stream(request, send, self.invoker.open(agent_request), encoder)
            return
        items: AsyncIterator[Any] | None = None
        error: tuple[str, str | None] | None = None
        payload = b""
        try:
            invoker = self.invoker
            if invoker.is_async:  # the agent's own coroutine, with no frame of ours around it
                items = await invoker.func(agent_request)
                if type(items) is not AsyncGeneratorType:
                    items = await invoker.adapt(items)
            else:
                items = await invoker.open(agent_request)
            # The whole run in one comprehension; when it is all text (the usual case) one
            # join takes it, with no per-item work in Python and no collector.
            raw = [item async for item in items]
            if request.run is not None:  # a run record: a deadline, a watcher, a shutdown
                raise_if_stopped(request)
            try:
                body = completion(completion_id, created, model,
                                  {"role": "assistant", "content": "".join(raw)})  # fmt: skip
            except TypeError:
                collector = ChatCompletionCollector()
                collector.add_all(raw)  # the first error event wins
                error = collector.error
                body = collector.body(completion_id, created, model)
            if error is None:
                try:
                    payload = _dumps(body)
                except TypeError as exc:
                    error = (unsendable(exc), None)
                    raise
        except Exception as exc:
            if request.run is not None:
                raise_if_stopped(request)  # the agent turned its stop into an error: a stop
            logger.exception("agent failed")
            if error is None:
                error = (error_message(exc), None)
        except BaseException as exc:
            own = agent_error(exc, request)
            if own is None:
                if items is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose(items)
                raise
            logger.error("agent failed", exc_info=own)
            error = (error_message(own), None)
            own = None  # its cause's traceback holds this frame: no cycle left behind
        if error is not None:
            if items is not None:
                await aclose(items)  # an iterator that failed may still hold resources
            message, code = error
            await send_error(send, ProtocolError(500, message, code=code, headers=NO_RETRY))
            return
        await send_bytes(send, 200, payload, JSON_HEADERS)
