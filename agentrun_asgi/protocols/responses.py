"""OpenAI Responses API: ``POST {prefix}/responses`` (JSON, or the ``response.*`` event stream).

Wire format per the OpenAI API reference ("Create a model response", "Streaming events"), checked
against the official client's types (``openai.types.responses``). The same agent serves it: the
request becomes an ``AgentRequest(protocol="responses")`` and its events become output items:

- a run of TEXT        -> one ``message`` item with one ``output_text`` part;
- a run of REASONING   -> one ``reasoning`` item with one ``reasoning_text`` part (the shape
  open-weight reasoning models use; ``summary`` stays empty);
- TOOL_CALL / TOOL_CALL_CHUNK -> one ``function_call`` item per call id (a chunk without an
  id continues the last call seen: OpenAI's deltas and the AgentRun SDK name a call only on its
  first chunk).

Stream states (at most one message or reasoning item open; function calls apart, any number)::

    (created, in_progress) -> IDLE <-> MESSAGE | REASONING -> completed | incomplete
                                                            \\-> failed (ERROR event)

The next item of another kind, a tool call event included, closes the open message or
reasoning item, so its events are contiguous and its text is the JSON form's. A
``function_call`` item stays open while other items come and go, until its call is known
complete: a whole ``TOOL_CALL`` or a ``TOOL_RESULT`` for it (an id-less result is the last
call's), or the end of the run. So a chunk after text still extends its call's one item (a
second item with the same call id would be a second call to answer); arguments for a call
already done are dropped, in the JSON form too. Items are added in the JSON form's output
order, and each event names its item's ``output_index``, which the client files it under.
Every event carries a ``sequence_number`` counting from 0; frames are ``event: <type>`` +
``data: <json>``, and the stream ends after the terminal event (the Responses API sends no
``[DONE]``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import NO_RETRY, ProtocolError
from ..guard import raise_if_stopped
from ..ids import new_id
from ..models import AgentEvent, EventType, text_of
from ..requests import Request
from ..responses import JSON_HEADERS, send_bytes, send_error, sends_request_id
from ..routing import Route
from ..streaming import error_message, run_stream, unsendable
from ..types import Send
from .base import ProtocolHandler
from .openai import ZERO_USAGE, OpenAIProtocolHandler, tool_call_id
from .openai_input import DEFAULT_MODEL
from .responses_input import parse_responses_request
from .validation import parse_object

if TYPE_CHECKING:
    from ..server import AgentRunServer

logger = logging.getLogger("agentrun_asgi")

_dumps = orjson.dumps
#: Request fields the response object echoes back (API reference, "The response object").
_ECHOED = ("instructions", "max_output_tokens", "temperature", "top_p", "user",
           "previous_response_id", "metadata", "truncation")  # fmt: skip
#: Chat ``finish_reason`` values that end a response ``incomplete``, and the reason given.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
#: ``response.error.code`` values a client may expect of a server-side failure.
_ERROR_CODES = frozenset(("server_error", "rate_limit_exceeded", "invalid_prompt"))


def _new_id(prefix: str) -> str:
    return new_id(prefix)


# -- the response object -----------------------------------------------------------------------


def response_base(response_id: str, created_at: int, model: str, body: dict[str, Any]
                  ) -> dict[str, Any]:  # fmt: skip
    """The fields of the response object that do not change while it runs."""
    base: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "store": False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "usage": None,
    }
    for key in _ECHOED:
        base[key] = body.get(key)
    return base


def _count(usage: dict[str, Any], *keys: str) -> int:
    """The first count given under ``keys`` as an int; one that is not a number is 0."""
    for key in keys:
        value = usage.get(key)
        if value:
            try:
                return int(value)
            except (TypeError, ValueError, OverflowError):
                return 0
    return 0


def _details(usage: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The first breakdown object given under ``keys`` (Chat's name, then the Responses one)."""
    for key in keys:
        value = usage.get(key)
        if isinstance(value, dict):
            return value
    return {}


def response_usage(usage: Any) -> dict[str, Any]:
    """The agent's usage (Chat-style or Responses-style) in the Responses shape, with the
    cached and reasoning token counts of its breakdowns, as Chat Completions and AG-UI report.

    Lenient: a count the agent got wrong ("many", infinity) must not fail a finished run with
    a 500, which the official clients would retry, running the agent again.
    """
    if not isinstance(usage, dict):
        usage = ZERO_USAGE
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    completion = _count(usage, "completion_tokens", "output_tokens")
    total = _count(usage, "total_tokens") or prompt + completion
    given_in = _details(usage, "prompt_tokens_details", "input_tokens_details")
    given_out = _details(usage, "completion_tokens_details", "output_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _count(given_in, "cached_tokens"),
                                 "cache_write_tokens": _count(given_in, "cache_write_tokens")},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(given_out, "reasoning_tokens")},
        "total_tokens": total,
    }  # fmt: skip


def _finish(base: dict[str, Any], output: list[dict[str, Any]], usage: dict[str, Any] | None,
            finish_reason: str | None) -> dict[str, Any]:  # fmt: skip
    """The final response object: ``completed``, or ``incomplete`` when the agent ran out of
    tokens or was filtered."""
    response = {**base, "output": output, "usage": response_usage(usage),
                "completed_at": int(time.time())}  # fmt: skip
    reason = _INCOMPLETE.get(finish_reason) if finish_reason is not None else None
    if reason is not None:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}
    else:
        response["status"] = "completed"
    return response


def _failure(message: str, code: str | None) -> dict[str, Any]:
    """``response.error``: its ``code`` is one of a fixed list in the API reference, so an
    agent's own code (``timeout``, ``agent_error``...) travels in ``type`` next to it."""
    if code in _ERROR_CODES:
        return {"code": code, "message": message}
    error = {"code": "server_error", "message": message}
    if code:
        error["type"] = str(code)
    return error


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def _reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}  # fmt: skip


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
               ) -> dict[str, Any]:  # fmt: skip
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}  # fmt: skip


class ResponseCollector:
    """Gathers a whole run into the ``output`` list of one response object (non-stream)."""

    __slots__ = ("_calls", "_closed", "_kind", "_last_call", "_parts", "error", "finish_reason",
                 "output", "usage")  # fmt: skip

    def __init__(self) -> None:
        self.output: list[dict[str, Any]] = []
        self._kind: str | None = None  # "message" or "reasoning" while one is being gathered
        self._parts: list[str] = []
        self._calls: dict[str, dict[str, Any]] = {}
        self._last_call: str | None = None  # an id-less chunk continues it
        self._closed: set[str] = set()  # calls known complete: their stream item is done
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: tuple[str, str | None] | None = None

    def _switch(self, kind: str | None) -> None:
        if self._kind == kind:
            return
        if self._kind is not None:
            text = "".join(self._parts)
            make = _message_item if self._kind == "message" else _reasoning_item
            self.output.append(make(_new_id("msg_" if self._kind == "message" else "rs_"), text))
            self._parts = []
        self._kind = kind

    def add(self, item: str | AgentEvent) -> None:
        if type(item) is str:
            if item:
                self._switch("message")
                self._parts.append(item)
            return
        ev: AgentEvent = item  # type: ignore[assignment]
        data = ev.data
        if data.get("usage") is not None:
            self.usage = data["usage"]
        if data.get("finish_reason") is not None:
            self.finish_reason = data["finish_reason"]
        kind = ev.event
        if kind == EventType.TEXT or kind == EventType.REASONING:
            delta = data.get("delta")
            if delta:
                self._switch("message" if kind == EventType.TEXT else "reasoning")
                self._parts.append(text_of(delta))
        elif kind == EventType.TOOL_CALL or kind == EventType.TOOL_CALL_CHUNK:
            self._switch(None)
            whole = kind == EventType.TOOL_CALL
            args = text_of(data.get("args" if whole else "args_delta"))
            call_id = self._last_call = tool_call_id(data.get("id"), self._last_call, whole)
            if call_id in self._closed:
                return  # dropped, as the stream must (its item is done there)
            call = self._calls.get(call_id)
            if call is None:
                if not args and whole:
                    args = "{}"  # a whole call with no arguments: OpenAI sends an empty object
                call = self._calls[call_id] = _call_item(
                    _new_id("fc_"), call_id, str(data.get("name") or ""), ""
                )
                self.output.append(call)
            elif data.get("name") and not call["name"]:
                call["name"] = str(data["name"])
            call["arguments"] += args
            if whole:
                self._closed.add(call_id)
        elif kind == EventType.TOOL_RESULT:
            call_id = str(data.get("id") or self._last_call or "")
            if call_id in self._calls:
                self._closed.add(call_id)
        elif kind == EventType.ERROR:
            self.error = (str(data.get("message") or "agent error"), data.get("code"))

    def response(self, base: dict[str, Any]) -> dict[str, Any]:
        self._switch(None)
        return _finish(base, self.output, self.usage, self.finish_reason)


# -- the stream encoder ------------------------------------------------------------------------

_IDLE, _MESSAGE, _REASONING = 0, 1, 2  # the message or reasoning item open, if any


class ResponsesStreamEncoder:
    """Sans-IO encoder of one ``response.*`` event stream (see the module docstring).

    The head of each delta event (type, item id, indexes) is rendered once when its item opens;
    a delta is then a join of that head, one ``orjson.dumps`` and the sequence number.
    """

    __slots__ = ("_base", "_calls", "_closed", "_delta_fields", "_delta_head", "_index",
                 "_item", "_last_call", "_parts", "_seq", "_state", "done", "finish_reason",
                 "output", "usage")  # fmt: skip

    def __init__(self, base: dict[str, Any]) -> None:
        self._base = base
        self._seq = 0
        self._state = _IDLE
        self.output: list[dict[str, Any]] = []  # every item opened, in output_index order
        self._item: dict[str, Any] | None = None  # the open message or reasoning item
        self._index = 0  # its output_index
        self._delta_fields: dict[str, Any] = {}  # its delta events' fields but the delta
        self._parts: list[str] = []
        self._delta_head = b""
        self._calls: dict[str, tuple[dict[str, Any], int, bytes]] = {}  # open calls by call id
        self._closed: set[str] | None = None  # calls whose item is done (made when one is)
        self._last_call: str | None = None  # an id-less chunk continues it
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.done = False

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload["type"] = kind
        payload["sequence_number"] = self._seq
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"

    def _delta(self, head: bytes, delta: str) -> bytes:
        seq = self._seq
        self._seq += 1
        return b"".join((head, _dumps(delta), b',"sequence_number":', str(seq).encode(),
                         b"}\n\n"))  # fmt: skip

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (once): sent with the head."""
        if self._seq:
            return b""
        snapshot = self._base
        return (self._event("response.created", {"response": snapshot})
                + self._event("response.in_progress", {"response": snapshot}))  # fmt: skip

    # -- items ---------------------------------------------------------------------------------

    def _open_item(self, state: int) -> bytes:
        """Close the open message or reasoning item, then open one (open calls stay open)."""
        out = self._close_item() if self._state != _IDLE else b""
        index = len(self.output)
        if state == _MESSAGE:
            item = _message_item(_new_id("msg_"), "", "in_progress")
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [],
                                    "logprobs": []}  # fmt: skip
            kind, extra = "response.output_text.delta", b',"logprobs":[]'
        else:
            item = _reasoning_item(_new_id("rs_"), "", "in_progress")
            part = {"type": "reasoning_text", "text": ""}
            kind, extra = "response.reasoning_text.delta", b""
        added = {**item, "content": []}
        self.output.append(item)
        self._item = item
        self._index = index
        self._parts = []
        self._state = state
        ids = {"item_id": item["id"], "output_index": index}
        self._delta_fields = {**ids, "content_index": 0}
        if state == _MESSAGE:
            self._delta_fields["logprobs"] = []
        self._delta_fields["type"] = kind
        out += self._event("response.output_item.added", {"output_index": index, "item": added})
        out += self._event("response.content_part.added", {**ids, "content_index": 0,
                                                          "part": part})  # fmt: skip
        self._delta_head = b"".join((
            b"event: ", kind.encode(), b'\ndata: {"type":"', kind.encode(), b'","item_id":',
            _dumps(item["id"]), b',"output_index":', str(index).encode(),
            b',"content_index":0', extra, b',"delta":',
        ))  # fmt: skip
        return out

    def _close_item(self) -> bytes:
        """Close the open message or reasoning item."""
        item = self._item
        if item is None:
            return b""
        self._item = None
        self._state = _IDLE
        text = "".join(self._parts)
        index = self._index
        item["status"] = "completed"
        part = item["content"][0]
        part["text"] = text
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "message":
            out = self._event("response.output_text.done", {**ids, "text": text, "logprobs": []})
        else:
            out = self._event("response.reasoning_text.done", {**ids, "text": text})
        out += self._event("response.content_part.done", {**ids, "part": part})
        return out + self._event("response.output_item.done", {"output_index": index,
                                                               "item": item})  # fmt: skip

    def _open_call(self, call_id: str, name: str) -> bytes:
        index = len(self.output)
        item = _call_item(_new_id("fc_"), call_id, name, "", "in_progress")
        self.output.append(item)
        kind = b"response.function_call_arguments.delta"
        head = b"".join((b"event: ", kind, b'\ndata: {"type":"', kind, b'","item_id":',
                         _dumps(item["id"]), b',"output_index":', str(index).encode(),
                         b',"delta":'))  # fmt: skip
        self._calls[call_id] = (item, index, head)
        return self._event("response.output_item.added", {"output_index": index,
                                                           "item": dict(item)})  # fmt: skip

    def _close_call(self, call_id: str) -> bytes:
        item, index, _ = self._calls.pop(call_id)
        if self._closed is None:
            self._closed = set()
        self._closed.add(call_id)
        item["status"] = "completed"
        out = self._event(
            "response.function_call_arguments.done",  # "name": the openai 2.x types require it
            {"item_id": item["id"], "output_index": index, "name": item["name"],
             "arguments": item["arguments"]},
        )
        return out + self._event("response.output_item.done", {"output_index": index,
                                                               "item": item})  # fmt: skip

    def _call_args(self, call_id: str, name: Any, args: str, whole: bool) -> bytes:
        # Text after a call is a new message, as in the JSON form (whose items are the same).
        out = self._close_item() if self._state != _IDLE else b""
        entry = self._calls.get(call_id)
        if entry is None:
            if self._closed is not None and call_id in self._closed:
                return out  # its item is done: a second item with its call id is a second call
            out += self._open_call(call_id, str(name or ""))
            entry = self._calls[call_id]
            if whole and not args:
                args = "{}"  # a whole call with no arguments: OpenAI sends an empty object
        elif name and not entry[0]["name"]:
            entry[0]["name"] = str(name)
        if args:
            entry[0]["arguments"] += args
            out += self._delta(entry[2], args)
        if whole:
            out += self._close_call(call_id)
        return out

    # -- StreamEncoder -------------------------------------------------------------------------

    def encode(self, item: str | AgentEvent) -> bytes:
        if type(item) is str:
            if not item:
                return b""
            out = self._open_item(_MESSAGE) if self._state != _MESSAGE else b""
            self._parts.append(item)
            return out + self._delta(self._delta_head, item)
        return self._encode_event(item)  # type: ignore[arg-type]

    def _encode_event(self, ev: AgentEvent) -> bytes:
        data = ev.data
        kind = ev.event
        if data.get("usage") is not None:
            self.usage = data["usage"]
        if data.get("finish_reason") is not None:
            self.finish_reason = data["finish_reason"]
        if kind == EventType.TEXT or kind == EventType.REASONING:
            delta = data.get("delta")
            if not delta:
                return b""
            delta = text_of(delta)
            state = _MESSAGE if kind == EventType.TEXT else _REASONING
            out = self._open_item(state) if self._state != state else b""
            self._parts.append(delta)
            if ev.addition:
                return out + self._with_addition(delta, ev.addition)
            return out + self._delta(self._delta_head, delta)
        if kind == EventType.TOOL_CALL or kind == EventType.TOOL_CALL_CHUNK:
            whole = kind == EventType.TOOL_CALL
            call_id = self._last_call = tool_call_id(data.get("id"), self._last_call, whole)
            args = text_of(data.get("args" if whole else "args_delta"))
            return self._call_args(call_id, data.get("name"), args, whole)
        if kind == EventType.TOOL_RESULT:
            # A call with a result has all its arguments: its item is done now, not at the end.
            call_id = str(data.get("id") or self._last_call or "")
            return self._close_call(call_id) if call_id in self._calls else b""
        if kind == EventType.RAW:
            raw = str(data.get("raw", ""))
            return (raw if raw.endswith("\n\n") else raw + "\n\n").encode()
        if kind == EventType.ERROR:
            return self.error(str(data.get("message") or "agent error"), data.get("code"))
        # STATE, CUSTOM, HITL: the Responses API has no place for them.
        return b""

    def _with_addition(self, delta: str, addition: dict[str, Any]) -> bytes:
        """A delta event with the agent's extra fields merged in (the slow path)."""
        payload = {**self._delta_fields, "delta": delta, **addition}
        return self._event(payload.pop("type"), payload)

    def close(self) -> bytes:
        out = self._close_item()
        for call_id in list(self._calls):  # calls last: an open item was opened after them
            out += self._close_call(call_id)
        response = _finish(self._base, self.output, self.usage, self.finish_reason)
        self.done = True
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": response})

    def error(self, message: str, code: str | None = None) -> bytes:
        """``response.failed``, with what was produced so far; the stream ends."""
        if self.done:
            return b""
        self.done = True
        if self._item is not None:
            self._item["content"][0]["text"] = "".join(self._parts)  # what was streamed of it
        response = {**self._base, "status": "failed", "output": self.output,
                    "error": _failure(message, code)}  # fmt: skip
        return self._event("response.failed", {"response": response})


# -- the handler -------------------------------------------------------------------------------


class OpenAIResponsesProtocolHandler(ProtocolHandler):
    """The Responses API at ``/v1/responses``, beside Chat Completions' routes: under the same
    prefix as the server's ``OpenAIProtocolHandler`` (``prefix_overrides`` for that one moves
    both, as an OpenAI client's one ``base_url`` expects), unless given one of its own."""

    name = "responses"

    def __init__(self, default_model: str | None = None) -> None:
        #: The model a response names when its request names none. Not given: the one Chat
        #: Completions answers with on the same server (the first of its ``models``), so both
        #: APIs name a model that ``GET /v1/models`` lists; set by each server it is bound to.
        self._model = default_model
        self.default_model = default_model or DEFAULT_MODEL
        self._prefix = "/v1"

    def bind(self, server: AgentRunServer) -> None:
        super().bind(server)
        chat = next((h for h in server.protocols if isinstance(h, OpenAIProtocolHandler)), None)
        if self._model is None:
            self.default_model = DEFAULT_MODEL if chat is None else chat.default_model
        self._prefix = "/v1" if chat is None else server.prefix_for(chat)

    def get_prefix(self) -> str | None:
        return self._prefix

    def routes(self) -> Sequence[Route]:
        return (Route("/responses", self.create_response, ("POST",), "openai.responses"),)

    @sends_request_id
    async def create_response(self, request: Request, send: Send) -> None:
        data = parse_object(await request.body(), request.scope)
        agent_request = parse_responses_request(data, self.default_model)
        agent_request.raw_request = request
        model: str = agent_request.model  # type: ignore[assignment]
        base = response_base(_new_id("resp_"), int(time.time()), model, data)
        if agent_request.stream:
            # run_stream sends start() (response.created, in_progress) right after the head.
            encoder = ResponsesStreamEncoder(base)
            await run_stream(request, send, self.invoker.open(agent_request), encoder)
            return
        events = self.invoke(agent_request)
        collector = ResponseCollector()
        try:
            async for item in events:
                collector.add(item)
                if collector.error is not None:
                    break
        except Exception as exc:
            logger.exception("agent failed")
            collector.error = (error_message(exc), None)
        finally:
            await events.aclose()
        if request.run is not None:  # stopped, and the agent returned or raised all the same
            raise_if_stopped(request)
        payload = b""
        if collector.error is None:
            try:
                payload = _dumps(collector.response(base))
            except TypeError as exc:  # orjson refuses what it cannot represent (a set...)
                collector.error = (unsendable(exc), None)
        if collector.error is not None:
            message, code = collector.error
            await send_error(send, ProtocolError(500, message, code=code, headers=NO_RETRY))
            return
        await send_bytes(send, 200, payload, JSON_HEADERS)
