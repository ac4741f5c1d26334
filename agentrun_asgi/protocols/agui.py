"""AG-UI 1.0: ``POST {prefix}`` (default ``/ag-ui/agent``) runs the agent as one SSE event run.

Wire format per the AG-UI 1.0 schema (``ag-ui-protocol`` 1.0, ``spec/1.0/schema.json``); the
event mapping is README's "Events" table. Every run is ``RUN_STARTED``, content events, then
exactly one of ``RUN_FINISHED`` / ``RUN_ERROR``. Optional fields are left out, never sent as
``null``.

The encoder's state machine (h11-style: one state at a time; FINISHED is terminal)::

    state/item    TEXT, str           REASONING           TOOL_CALL(_CHUNK)    TOOL_RESULT(_CHUNK)
    IDLE          START -> TEXT       START -> REASONING  START -> TOOLS       RESULT
    TEXT          CONTENT             close, START        close, START         close, RESULT -> IDLE
    REASONING     close, START        CONTENT             close, START         close, RESULT -> IDLE
    TOOLS         END all, START      END all, START      START/ARGS/END       END own, RESULT

    any state, STATE / CUSTOM / RAW         -> the event; the state does not change
    any state, ERROR, error()               -> close what is open, RUN_ERROR     -> FINISHED
    any state, HITL, close()                -> close what is open, RUN_FINISHED  -> FINISHED

- TEXT: one text message open; consecutive text extends it ("one message per run of text").
- REASONING: one block open (``REASONING_START`` + ``REASONING_MESSAGE_START`` role reasoning).
- TOOLS: one or more tool calls open (parallel calls). A ``TOOL_CALL`` is START/ARGS/END at
  once; a call streamed by ``TOOL_CALL_CHUNK`` stays open until it is done: a ``TOOL_CALL`` or
  a result for its id, text or reasoning (the model has moved on), or the end of the run. The
  state is IDLE again when no call is left open. A chunk for a call already ended (its id, or
  none: the last call, as on the OpenAI protocols) starts it anew, with the name and parent of
  its first START (1.0: a reopening start must agree with it). A call streamed without a name
  holds its START, and buffers its arguments, until a chunk names it (1.0 names a call on START
  only, and the client never renames an open call); a call that ends unnamed starts with the
  name "".
- A call that the agent gives no arguments (a whole ``TOOL_CALL`` without ``args``, or one made
  up for a result) gets ``"{}"``, as the OpenAI protocols send: the client would otherwise keep
  ``""``, which no JSON parser reads.
- A result for a call never announced gets its START/ARGS/END made up first, unless an input
  message has the call (an earlier run made it, as before a HITL resume): the client holds it
  already, and a made-up START would rename it to "" and append "{}" to its arguments. Result
  chunks are buffered and prepended to the result (flushed as a result of their own at the end
  of the run, before ``RUN_FINISHED`` or ``RUN_ERROR``).
- FINISHED: ``RUN_FINISHED`` or ``RUN_ERROR`` sent; every later item encodes to ``b""``.

A tool call that opens right after a text message names it as ``parentMessageId``, so the
client files the call under that assistant message (as OpenAI's history shape has it); calls
with no text before them name one made-up message id, shared until text, reasoning or a result
comes, so that parallel calls are one assistant message there too (without a parent the client
makes each call a message of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..ids import new_id
from ..models import AgentEvent, EventType, Message, text_of
from ..requests import Request
from ..responses import sends_request_id
from ..routing import Route
from ..streaming import run_stream
from ..types import Send
from .agui_input import parse_run_input
from .base import ProtocolHandler
from .validation import parse_object

PROTOCOL_VERSION = "1.0"

_dumps = orjson.dumps


def _new_id(prefix: str) -> str:
    return new_id(prefix)


# -- encoding ----------------------------------------------------------------------------------

_IDLE, _TEXT, _REASONING, _TOOLS, _FINISHED = "IDLE", "TEXT", "REASONING", "TOOLS", "FINISHED"
_END = b"}\n\n"
_UNSET: Any = object()


def _frame(payload: dict[str, Any], addition: dict[str, Any] | None = None) -> bytes:
    if addition:
        payload.update(addition)
    return b"data: " + _dumps(payload) + b"\n\n"


_USAGE_INTS = (
    ("inputTokens", "prompt_tokens", "input_tokens"),
    ("outputTokens", "completion_tokens", "output_tokens"),
    ("totalTokens", "total_tokens", "total_tokens"),
    ("reasoningTokens", "reasoning_tokens", "reasoning_tokens"),
    ("cachedInputTokens", "cached_tokens", "cached_input_tokens"),
)


def _token_usage(usage: Any) -> list[dict[str, Any]] | None:
    """AG-UI's usage list (``TokenUsage`` objects) from OpenAI's usage object, or from entries
    already in AG-UI's shape; counts that are not non-negative integers are left out, and a
    missing total is the input and output counts summed."""
    if isinstance(usage, list):
        entries = [e for u in usage if (e := _token_usage(u))]
        return [x for e in entries for x in e] or None
    if not isinstance(usage, dict):
        return None
    flat = dict(usage)
    for details in ("completion_tokens_details", "prompt_tokens_details"):
        if isinstance(usage.get(details), dict):
            flat.update(usage[details])
    entry: dict[str, Any] = {}
    for key in ("provider", "model"):
        if isinstance(usage.get(key), str):
            entry[key] = usage[key]
    for names in _USAGE_INTS:
        for name in names:
            value = flat.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                entry[names[0]] = value
                break
    if "totalTokens" not in entry and "inputTokens" in entry and "outputTokens" in entry:
        # A missing total is the sum, as on the OpenAI protocols (and AG-UI's own definition).
        entry["totalTokens"] = entry["inputTokens"] + entry["outputTokens"]
    return [entry] if entry else None


_PATCH_OPS = frozenset(("add", "remove", "replace", "move", "copy", "test"))


def _json_patch(delta: Any) -> list[Any]:
    """``delta`` if it is an RFC 6902 patch: a list of ``{op, path, ...}`` operations.

    A 1.0 client that meets anything else fails the whole run with a schema error of its own;
    raising here makes the agent's mistake a ``RUN_ERROR`` that says what was wrong instead.
    """
    if type(delta) is list and all(
        type(op) is dict and op.get("op") in _PATCH_OPS and type(op.get("path")) is str
        for op in delta
    ):
        return delta
    raise TypeError(
        "a STATE delta must be a JSON Patch (RFC 6902): a list of {op, path, ...} operations"
    )


class AGUIStreamEncoder:
    """Sans-IO encoder of one AG-UI run: items in, SSE frames out (state machine above).

    Bytes that repeat within a message (the ``TEXT_MESSAGE_CONTENT`` head with its messageId,
    the END frame) are built once when the message opens; a text delta is then one join.
    Run-level facts ride on any event's data: ``usage`` (the last one wins) and ``result``
    (not on TOOL_RESULT, where it is the tool's) end up on ``RUN_FINISHED``.
    """

    __slots__ = (
        "_calls", "_held", "_history", "_ids", "_last_call", "_parent", "_parent_run",
        "_reasoning_content", "_reasoning_end", "_reasoning_id", "_result_parts", "_run_id",
        "_seen_calls", "_started", "_state", "_text_content", "_text_end", "_text_id",
        "_thread_id", "done", "result", "usage",
    )  # fmt: skip

    def __init__(self, thread_id: str, run_id: str, parent_run_id: str | None = None,
                 history: Sequence[Message] = ()) -> None:  # fmt: skip
        self._thread_id = thread_id
        # The input messages as the client sent them, read only for a result of an unseen call:
        # a copy, since the agent may add its own to its request's list while it runs.
        self._history = tuple(history)
        self._run_id = run_id
        self._ids = _dumps({"threadId": thread_id, "runId": run_id})[1:-1]
        self._parent_run = b',"parentRunId":' + _dumps(parent_run_id) if parent_run_id else b""
        self._started = False
        self._state = _IDLE
        self._text_id = ""
        self._text_content = self._text_end = b""
        self._reasoning_id = ""
        self._reasoning_content = self._reasoning_end = b""
        self._calls: dict[str, bytes] = {}  # open tool call id -> its '"toolCallId":...' bytes
        # call id -> (toolCallName, parentMessageId) of its first START: a reopened call repeats
        # them (1.0: a reopening start MUST agree with the call it reopens).
        self._seen_calls: dict[str, tuple[str, str | None]] = {}
        # open streamed call id -> (parentMessageId, START addition, argument deltas) of a call
        # whose START waits for its name (1.0 names a call on START; the client never renames)
        self._held: dict[str, tuple[str | None, dict[str, Any] | None, list[str]]] = {}
        self._last_call: str | None = None
        self._parent: str | None = None  # the text message that tool calls now follow
        self._result_parts: dict[str, list[str]] = {}
        self.usage: Any = None
        self.result: Any = _UNSET
        self.done = False

    # -- run boundaries ------------------------------------------------------------------------

    def start(self) -> bytes:
        """``RUN_STARTED`` (once); every other method sends it first if nobody asked yet."""
        if self._started:
            return b""
        self._started = True
        return b"".join((b'data: {"type":"RUN_STARTED",', self._ids,
                         b',"protocolVersion":"' + PROTOCOL_VERSION.encode() + b'"',
                         self._parent_run, _END))  # fmt: skip

    def _head(self) -> bytes:
        return b"" if self._started else self.start()

    def close(self) -> bytes:
        """Close what is open, flush buffered tool results, then ``RUN_FINISHED``."""
        if self.done:
            return b""
        return self._finish(None)

    def error(self, message: str, code: str | None = None) -> bytes:
        """Close what is open, flush buffered tool results, then ``RUN_ERROR``."""
        if self.done:
            return b""
        out = self._enter(_IDLE) + self._flush_results()
        payload: dict[str, Any] = {"type": "RUN_ERROR", "message": message}
        if code is not None:
            payload["code"] = str(code)
        usage = _token_usage(self.usage)
        if usage:
            payload["usage"] = usage
        self._state = _FINISHED
        self.done = True
        return out + _frame(payload)

    def _finish(
        self, outcome: dict[str, Any] | None, addition: dict[str, Any] | None = None
    ) -> bytes:
        payload: dict[str, Any] = {
            "type": "RUN_FINISHED",
            "threadId": self._thread_id,
            "runId": self._run_id,
        }
        if self.result is not _UNSET and self.result is not None:
            payload["result"] = self.result
        if outcome is not None:
            payload["outcome"] = outcome
        usage = _token_usage(self.usage)
        if usage:
            payload["usage"] = usage
        finished = _frame(payload, addition)  # serialised before any state changes
        out = self._enter(_IDLE) + self._flush_results()
        self._state = _FINISHED
        self.done = True
        return out + finished

    def _flush_results(self) -> bytes:
        """Buffered result chunks no result came for, each sent as its call's result: at the end
        of the run, failed or not, they are still the tool's output."""
        out = b""
        for call_id in list(self._result_parts):
            out += self._tool_result(call_id, "", None)
        return out

    # -- the state machine ---------------------------------------------------------------------

    def _enter(self, state: str) -> bytes:
        """The frames that move the machine to ``state``: close the open block, open the new."""
        out = self._head()
        current = self._state
        if current == state or current == _FINISHED:
            return out
        if current == _TEXT:
            out += self._text_end
            # A tool call right after a text message belongs to it (1.0: parentMessageId).
            self._parent = self._text_id if state == _TOOLS else None
        elif current == _REASONING:
            out += self._reasoning_end
        elif current == _TOOLS:
            for call_id, fragment in self._calls.items():
                if self._held and call_id in self._held:
                    out += self._release(call_id, None)
                out += b'data: {"type":"TOOL_CALL_END",' + fragment + _END
            self._calls.clear()
        if state == _TEXT:
            self._parent = None
            self._text_id = _new_id("msg_")
            mid = _dumps(self._text_id)
            self._text_content = (
                b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":' + mid + b',"delta":'
            )
            self._text_end = b'data: {"type":"TEXT_MESSAGE_END","messageId":' + mid + _END
            out += (
                b'data: {"type":"TEXT_MESSAGE_START","messageId":'
                + mid
                + b',"role":"assistant"}\n\n'
            )
        elif state == _REASONING:
            self._parent = None
            block = _dumps(_new_id("reasoning_"))
            self._reasoning_id = _new_id("msg_")
            mid = _dumps(self._reasoning_id)
            self._reasoning_content = (
                b'data: {"type":"REASONING_MESSAGE_CONTENT","messageId":' + mid + b',"delta":'
            )
            self._reasoning_end = (
                b'data: {"type":"REASONING_MESSAGE_END","messageId":' + mid + _END
                + b'data: {"type":"REASONING_END","messageId":' + block + _END
            )  # fmt: skip
            out += (
                b'data: {"type":"REASONING_START","messageId":' + block + _END
                + b'data: {"type":"REASONING_MESSAGE_START","messageId":' + mid
                + b',"role":"reasoning"}\n\n'
            )  # fmt: skip
        self._state = state
        return out

    def encode(self, item: str | AgentEvent) -> bytes:
        if type(item) is str:
            if self._state == _TEXT:  # the hot path: one more delta of the open message
                return self._text_content + _dumps(item) + _END if item else b""
            return self._text(item, None)
        return self._event(item)  # type: ignore[arg-type]

    def _text(self, delta: Any, addition: dict[str, Any] | None) -> bytes:
        # TEXT_MESSAGE_CONTENT.delta: empty deltas are skipped (older clients reject them).
        if not delta or self._state == _FINISHED:
            return b""
        delta = text_of(delta)
        out = self._enter(_TEXT)
        if addition:
            content = {"type": "TEXT_MESSAGE_CONTENT", "messageId": self._text_id, "delta": delta}
            return out + _frame(content, addition)
        return out + self._text_content + _dumps(delta) + _END

    def _event(self, ev: AgentEvent) -> bytes:
        if self._state == _FINISHED:
            return b""
        data = ev.data
        kind = ev.event
        if ev.addition:
            _dumps(ev.addition)  # fail on what cannot be sent before any state changes
        usage = data.get("usage")
        if usage is not None:  # a null usage is none given, as on the OpenAI protocols
            self.usage = usage
        if "result" in data and kind != EventType.TOOL_RESULT:
            self.result = data["result"]
        if kind == EventType.TEXT:
            return self._text(data.get("delta"), ev.addition)
        if kind == EventType.REASONING:
            delta = data.get("delta")
            if not delta:
                return b""
            delta = text_of(delta)
            out = self._enter(_REASONING)
            if ev.addition:
                return out + _frame({"type": "REASONING_MESSAGE_CONTENT",
                                     "messageId": self._reasoning_id,
                                     "delta": delta}, ev.addition)  # fmt: skip
            return out + self._reasoning_content + _dumps(delta) + _END
        if kind == EventType.TOOL_CALL or kind == EventType.TOOL_CALL_CHUNK:
            whole = kind == EventType.TOOL_CALL
            args = data.get("args" if whole else "args_delta")
            return self._tool_call(data.get("id"), data.get("name"), args, whole, ev.addition)
        if kind == EventType.TOOL_RESULT_CHUNK:
            call_id = str(data.get("id") or self._last_call or "")
            part = text_of(data.get("delta") or "")
            out = self._close_call(call_id)
            self._result_parts.setdefault(call_id, []).append(part)
            return out
        if kind == EventType.TOOL_RESULT:
            content = data["result"] if "result" in data else data.get("content")
            text = text_of(content)
            return self._tool_result(str(data.get("id") or self._last_call or ""), text,
                                     ev.addition, data.get("name"))  # fmt: skip
        if kind == EventType.STATE:
            if "snapshot" in data:
                payload = {"type": "STATE_SNAPSHOT", "snapshot": data["snapshot"]}
            elif "delta" in data:
                payload = {"type": "STATE_DELTA", "delta": _json_patch(data["delta"])}
            else:
                payload = {"type": "STATE_SNAPSHOT", "snapshot": data}
            frame = _frame(payload, ev.addition)
            return self._head() + frame
        if kind == EventType.CUSTOM:
            payload = {"type": "CUSTOM", "name": str(data.get("name") or ""),
                       "value": data.get("value")}  # fmt: skip
            frame = _frame(payload, ev.addition)
            return self._head() + frame
        if kind == EventType.RAW:
            if "raw" in data:
                raw = str(data["raw"])
                if not raw.endswith("\n\n"):
                    raw += "\n\n"  # keep the next frame parseable
                return self._head() + raw.encode()
            payload = {"type": "RAW", "event": data["event"] if "event" in data else data}
            if data.get("source") is not None:
                payload["source"] = str(data["source"])
            frame = _frame(payload, ev.addition)
            return self._head() + frame
        if kind == EventType.ERROR:
            return self.error(str(data.get("message") or "agent error"), data.get("code"))
        if kind == EventType.HITL:
            return self._finish({"type": "interrupt", "interrupts": [_interrupt(data)]},
                                ev.addition)  # fmt: skip
        return b""

    # -- tool calls ----------------------------------------------------------------------------

    def _tool_call(self, call_id: Any, name: Any, args: Any, whole: bool,
                   addition: dict[str, Any] | None) -> bytes:  # fmt: skip
        args = text_of(args)  # an empty dict is "{}", as on the OpenAI protocols
        if call_id:
            call_id = str(call_id)
        elif not whole and self._last_call is not None:
            # A chunk without an id continues the last call, as on the OpenAI protocols: one
            # that text or reasoning closed meanwhile is reopened under its id and name.
            call_id = self._last_call
        else:
            call_id = _new_id("call_")
        out = self._enter(_TOOLS)
        fragment = self._calls.get(call_id)
        held = self._held.get(call_id) if self._held else None
        if fragment is None:
            fragment = self._calls[call_id] = b'"toolCallId":' + _dumps(call_id)
            if call_id not in self._seen_calls and self._parent is None:
                self._parent = _new_id("msg_")  # calls with no text before: one message
            if call_id in self._seen_calls:  # reopened: its first START's name and parent
                out += self._start(call_id, None, None, addition)
            elif whole or name:
                if whole and not args:
                    args = "{}"  # a whole call with no arguments: an empty object, as OpenAI sends
                out += self._start(call_id, name, self._parent, addition)
            else:  # streamed without a name yet: START waits for a chunk that brings it
                held = self._held[call_id] = (self._parent, addition, [])
            addition = None
        elif held is not None and (name or whole):
            out += self._release(call_id, name)
            held = None
        self._last_call = call_id
        if args:
            if held is not None:
                held[2].append(args)
            elif addition:
                out += _frame({"type": "TOOL_CALL_ARGS", "toolCallId": call_id,
                               "delta": args}, addition)  # fmt: skip
            else:
                out += b'data: {"type":"TOOL_CALL_ARGS",' + fragment + b',"delta":' \
                    + _dumps(args) + _END  # fmt: skip
        if whole:
            out += self._close_call(call_id)
        return out

    def _start(self, call_id: str, name: Any, parent: str | None,
               addition: dict[str, Any] | None) -> bytes:  # fmt: skip
        """``TOOL_CALL_START``; a call started before repeats its first name and parent."""
        head = self._seen_calls.setdefault(call_id, (str(name or ""), parent))
        start = {"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": head[0]}
        if head[1] is not None:
            start["parentMessageId"] = head[1]
        return _frame(start, addition)

    def _release(self, call_id: str, name: Any) -> bytes:
        """The START of a held call (named ``name``, or nameless at its end) and its arguments
        so far, in one ``TOOL_CALL_ARGS``."""
        parent, addition, parts = self._held.pop(call_id)
        out = self._start(call_id, name, parent, addition)
        if parts:
            out += b'data: {"type":"TOOL_CALL_ARGS","toolCallId":' + _dumps(call_id) \
                + b',"delta":' + _dumps("".join(parts)) + _END  # fmt: skip
        return out

    def _close_call(self, call_id: str, name: Any = None) -> bytes:
        """``TOOL_CALL_END`` for ``call_id`` if it is open (a held call started as ``name``);
        text and reasoning close too."""
        out = self._head() if self._state == _TOOLS else self._enter(_IDLE)
        fragment = self._calls.pop(call_id, None)
        if fragment is not None:
            if self._held and call_id in self._held:
                out += self._release(call_id, name)
            out += b'data: {"type":"TOOL_CALL_END",' + fragment + _END
            if not self._calls:
                self._state = _IDLE
        return out

    def _in_history(self, call_id: str) -> bool:
        """Whether an input message has the call (an earlier run's, answered in this one)."""
        return any(call.id == call_id for message in self._history
                   for call in message.tool_calls or ())  # fmt: skip

    def _tool_result(self, call_id: str, text: str, addition: dict[str, Any] | None,
                     name: Any = None) -> bytes:  # fmt: skip
        out = self._close_call(call_id, name)
        if call_id not in self._seen_calls and not self._in_history(call_id):
            # A result for a call never announced: make up its START/ARGS/END, so that
            # the result answers a call the client has seen.
            self._seen_calls[call_id] = (str(name or ""), None)
            fragment = _dumps({"type": "TOOL_CALL_START", "toolCallId": call_id,
                               "toolCallName": str(name or "")})  # fmt: skip
            ids = b'"toolCallId":' + _dumps(call_id)
            out += b"data: " + fragment + b'\n\ndata: {"type":"TOOL_CALL_ARGS",' + ids \
                + b',"delta":"{}"}\n\ndata: {"type":"TOOL_CALL_END",' + ids + _END  # fmt: skip
        self._parent = None
        parts = self._result_parts.pop(call_id, None)
        if parts:
            text = "".join(parts) + text
        payload = {"type": "TOOL_CALL_RESULT", "messageId": _new_id("msg_"), "toolCallId": call_id,
                   "content": text, "role": "tool"}  # fmt: skip
        return out + _frame(payload, addition)


def _interrupt(data: dict[str, Any]) -> dict[str, Any]:
    """An AG-UI 1.0 ``Interrupt`` from HITL data ``{id, type, prompt, tool_call_id?, options?,
    schema?}``; ``options`` has no field of its own and travels in ``metadata``."""
    interrupt: dict[str, Any] = {
        "id": str(data.get("id") or _new_id("interrupt_")),
        "reason": str(data.get("type") or "input_required"),
    }
    if data.get("prompt") is not None:
        interrupt["message"] = text_of(data["prompt"])
    if data.get("tool_call_id") is not None:
        interrupt["toolCallId"] = str(data["tool_call_id"])
    if isinstance(data.get("schema"), dict):
        interrupt["responseSchema"] = data["schema"]  # 1.0: an object, never a bare boolean
    if data.get("options") is not None:
        interrupt["metadata"] = {"options": data["options"]}
    return interrupt


# -- the handler -------------------------------------------------------------------------------


class AGUIProtocolHandler(ProtocolHandler):
    """AG-UI 1.0 runs at ``/ag-ui/agent`` by default: ``RunAgentInput`` in, SSE events out.

    The answer is always ``text/event-stream``, whatever ``Accept`` says: a client asking for
    the protobuf encoding (``application/vnd.ag-ui.event+proto``) gets SSE, which every AG-UI
    client reads, as the reference Python ``EventEncoder`` does. Input errors (bad JSON, wrong
    types, unknown roles) are 400 JSON errors sent before any stream opens; errors after that
    are ``RUN_ERROR`` events.
    """

    name = "agui"

    def get_prefix(self) -> str | None:
        return "/ag-ui/agent"

    def routes(self) -> Sequence[Route]:
        return (Route("", self.run_agent, ("POST",), "agui.run"),)

    @sends_request_id
    async def run_agent(self, request: Request, send: Send) -> None:
        data = parse_object(await request.body(), request.scope)
        agent_request = parse_run_input(data)
        agent_request.raw_request = request
        encoder = AGUIStreamEncoder(
            agent_request.thread_id or "", agent_request.run_id or "",
            agent_request.parent_run_id, agent_request.messages,
        )  # fmt: skip

        # run_stream sends the encoder's start() (RUN_STARTED) right after the response head.
        await run_stream(request, send, self.invoker.open(agent_request), encoder)
