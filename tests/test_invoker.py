"""Every shape an agent may return or yield, normalised into one stream, sync and async."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentResponse,
    AgentRunServer,
    EventType,
    Invoker,
    ToolCall,
)
from agentrun_asgi.invoker import AgentOutputError

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def collect(func: Any) -> list[Any]:
    return [item async for item in Invoker(func).stream(AgentRequest())]


def texts(items: list[Any]) -> str:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif item.event == EventType.TEXT:
            out.append(item.data.get("delta") or "")
    return "".join(out)


# -- direct, on Invoker.stream() --------------------------------------------------------------

EV = AgentEvent(EventType.REASONING, {"delta": "r"})


def ret_str(request: AgentRequest) -> str:
    return "s"


async def ret_str_async(request: AgentRequest) -> str:
    return "s"


def ret_event(request: AgentRequest) -> AgentEvent:
    return EV


async def ret_event_async(request: AgentRequest) -> AgentEvent:
    return EV


def ret_list(request: AgentRequest) -> list[Any]:
    return ["a", None, EV, "b"]


async def ret_list_async(request: AgentRequest) -> list[Any]:
    return ["a", None, EV, "b"]


def gen_sync(request: AgentRequest) -> Iterator[Any]:
    yield "a"
    yield None
    yield EV
    yield "b"


async def gen_async(request: AgentRequest) -> AsyncIterator[Any]:
    yield "a"
    yield None
    yield EV
    yield "b"


def returns_generator(request: AgentRequest) -> Iterator[Any]:
    return gen_sync(request)


async def returns_async_generator(request: AgentRequest) -> AsyncIterator[Any]:
    return gen_async(request)


class AsyncCallable:
    async def __call__(self, request: AgentRequest) -> str:
        return "s"


class AsyncGenCallable:
    async def __call__(self, request: AgentRequest) -> AsyncIterator[Any]:
        yield "a"
        yield None
        yield EV
        yield "b"


class SyncCallable:
    def __call__(self, request: AgentRequest) -> str:
        return "s"


def _prefixed(prefix: str, request: AgentRequest) -> str:
    return prefix + "s"


async def _prefixed_async(prefix: str, request: AgentRequest) -> str:
    return prefix + "s"


async def _prefixed_agen(prefix: str, request: AgentRequest) -> AsyncIterator[str]:
    yield prefix
    yield "s"


SEQUENCE = ["a", EV, "b"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "agent, expected",  # not "func": anyio's pytest plugin before 4.13 takes that name
    [
        (ret_str, ["s"]),
        (ret_str_async, ["s"]),
        (ret_event, [EV]),
        (ret_event_async, [EV]),
        (ret_list, SEQUENCE),
        (ret_list_async, SEQUENCE),
        (gen_sync, SEQUENCE),
        (gen_async, SEQUENCE),
        (returns_generator, SEQUENCE),
        (returns_async_generator, SEQUENCE),
        (AsyncCallable(), ["s"]),
        (AsyncGenCallable(), SEQUENCE),
        (SyncCallable(), ["s"]),
        (functools.partial(_prefixed, "p-"), ["p-s"]),
        (functools.partial(_prefixed_async, "p-"), ["p-s"]),
        (functools.partial(_prefixed_agen, "p-"), ["p-", "s"]),
        (lambda r: None, []),
        (lambda r: (x for x in ("g", "h")), ["g", "h"]),
        (lambda r: ("t1", "t2"), ["t1", "t2"]),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__) if callable(v) else "",
)
async def test_return_shapes(agent: Any, expected: list[Any]) -> None:
    assert await collect(agent) == expected


@pytest.mark.anyio
async def test_agent_response_becomes_events() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    response = AgentResponse(
        content="hello",
        reasoning_content="why",
        tool_calls=[ToolCall("c1", "f", '{"a":1}')],
        usage=usage,
    )
    items = await collect(lambda r: response)
    kinds = [(i.event, i.data) for i in items]
    assert kinds == [
        (EventType.REASONING, {"delta": "why"}),
        (EventType.TEXT, {"delta": "hello"}),
        (EventType.TOOL_CALL, {"id": "c1", "name": "f", "args": '{"a":1}'}),
        (EventType.TEXT, {"delta": "", "usage": usage}),
    ]


@pytest.mark.anyio
async def test_dict_is_agent_response_fields() -> None:
    items = await collect(lambda r: {"content": "c", "reasoning_content": "r"})
    assert [(i.event, i.data) for i in items] == [
        (EventType.REASONING, {"delta": "r"}), (EventType.TEXT, {"delta": "c"})
    ]


@pytest.mark.anyio
async def test_dict_tool_calls_as_dicts() -> None:
    """Tool calls in a returned dict may be plain dicts, flat or in OpenAI's nested shape."""
    value = {"tool_calls": [
        {"id": "c1", "name": "f", "arguments": '{"a":1}'},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"b": 2}}},
    ]}  # fmt: skip
    items = await collect(lambda r: value)
    assert [(i.event, i.data) for i in items] == [
        (EventType.TOOL_CALL, {"id": "c1", "name": "f", "args": '{"a":1}'}),
        (EventType.TOOL_CALL, {"id": "c2", "name": "g", "args": '{"b":2}'}),
    ]


@pytest.mark.anyio
async def test_dict_with_unknown_keys_is_a_clear_error() -> None:
    with pytest.raises(AgentOutputError, match=r"unknown keys.*'text'"):
        await collect(lambda r: {"text": "oops"})


@pytest.mark.anyio
async def test_openai_assistant_message_dict_is_an_answer() -> None:
    """``completion.choices[0].message.model_dump()``, what a relaying agent has at hand."""
    from openai.types.chat import ChatCompletionMessage

    message = ChatCompletionMessage(role="assistant", content="hi", tool_calls=[
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
    for dumped in (message.model_dump(), message.model_dump(exclude_none=True)):
        items = await collect(lambda r, dumped=dumped: dumped)
        assert [(i.event, i.data) for i in items] == [
            (EventType.TEXT, {"delta": "hi"}),
            (EventType.TOOL_CALL, {"id": "c1", "name": "f", "args": "{}"}),
        ]
    refused = ChatCompletionMessage(role="assistant", content=None, refusal="I can't.")
    items = await collect(lambda r: refused.model_dump())
    assert [(i.event, i.data) for i in items] == [(EventType.TEXT, {"delta": "I can't."})]


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "error"), [
    ({"role": "user", "content": "hi"}, "role 'user'"),
    ({"role": "assistant", "content": "hi", "audio": {"id": "a"}}, r"with \['audio'\], which"),
    ({"role": "assistant", "content": "hi", "refusal": "no"}, r"with \['refusal'\], which"),
    ({"content": "hi", "annotations": [{"type": "url_citation"}]},
     r"message with \['annotations'\], which an answer cannot carry"),
    ({"role": "assistant", "content": "hi", "text": "x"}, r"\['text'\]"),
])  # fmt: skip
async def test_message_dict_that_says_more_than_an_answer_is_a_clear_error(
    value: dict[str, Any], error: str
) -> None:
    """What an AgentResponse cannot carry is refused by name, never dropped unseen."""
    with pytest.raises(AgentOutputError, match=error):
        await collect(lambda r: value)


@pytest.mark.anyio
@pytest.mark.parametrize("value", [42, 4.5, object(), b"bytes"])
async def test_unsupported_return_is_a_clear_error(value: Any) -> None:
    with pytest.raises(AgentOutputError, match="unsupported value of type"):
        await collect(lambda r: value)


@pytest.mark.anyio
async def test_unsupported_yield_is_a_clear_error() -> None:
    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        yield "ok"
        yield 42

    with pytest.raises(AgentOutputError, match="type int"):
        await collect(agent)


@pytest.mark.anyio
async def test_sync_work_runs_off_the_event_loop_thread() -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    def func(request: AgentRequest) -> str:
        seen.append(threading.current_thread())
        return "x"

    def gen(request: AgentRequest) -> Iterator[str]:
        seen.append(threading.current_thread())
        yield "a"
        seen.append(threading.current_thread())
        yield "b"

    class Obj:
        def __call__(self, request: AgentRequest) -> str:
            seen.append(threading.current_thread())
            return "y"

    def partial_target(tag: str, request: AgentRequest) -> str:
        seen.append(threading.current_thread())
        return tag

    for agent in (func, gen, Obj(), functools.partial(partial_target, "z")):
        await collect(agent)
    assert len(seen) == 5
    assert all(t is not loop_thread for t in seen)


@pytest.mark.anyio
async def test_sync_generator_closed_on_aclose() -> None:
    finalized = threading.Event()

    def gen(request: AgentRequest) -> Iterator[str]:
        try:
            while True:
                yield "x"
        finally:
            finalized.set()

    stream = Invoker(gen).stream(AgentRequest())
    assert await stream.__anext__() == "x"
    await stream.aclose()
    assert finalized.is_set()


@pytest.mark.anyio
async def test_async_generator_closed_on_aclose() -> None:
    finalized: list[bool] = []

    async def gen(request: AgentRequest) -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
        finally:
            finalized.append(True)

    stream = Invoker(gen).stream(AgentRequest())
    assert await stream.__anext__() == "x"
    await stream.aclose()
    assert finalized == [True]


_tracing: contextvars.ContextVar[str] = contextvars.ContextVar("tracing", default="none")


@pytest.mark.anyio
@pytest.mark.parametrize("closed_early", [False, True])
async def test_sync_generator_keeps_its_context_across_steps(closed_early: bool) -> None:
    """Each ``next()`` runs in a worker thread, but in one context for the generator's life, as
    a generator iterated in one thread would: a span (or any context variable) set before a
    ``yield`` is current after it, and its token resets in the ``finally``."""
    seen: list[str] = []
    reset: list[str] = []

    def gen(request: AgentRequest) -> Iterator[str]:
        token = _tracing.set("span-1")  # as tracer.start_as_current_span() does
        try:
            yield "a"
            seen.append(_tracing.get())
            yield "b"
            seen.append(_tracing.get())
        finally:
            try:
                _tracing.reset(token)
                reset.append("ok")
            except ValueError as exc:  # "was created in a different Context"
                reset.append(str(exc))

    stream = Invoker(gen).stream(AgentRequest())
    if closed_early:
        assert await stream.__anext__() == "a"
        assert await stream.__anext__() == "b"
        await stream.aclose()
    else:
        assert [item async for item in stream] == ["a", "b"]
    assert seen == ["span-1"] * (1 if closed_early else 2)
    assert reset == ["ok"]
    assert _tracing.get() == "none"  # nothing leaked into the caller's context


def test_not_callable_rejected() -> None:
    with pytest.raises(TypeError, match="callable"):
        Invoker("not a function")  # type: ignore[arg-type]


# -- through the real server -------------------------------------------------------------------


def _server_agent(request: AgentRequest) -> Any:
    mode = request.messages[-1].text
    shapes: dict[str, Any] = {
        "str": "plain",
        "dict": {"content": "from dict", "reasoning_content": "dr"},
        "response": AgentResponse(content="resp", reasoning_content="rr",
                                  tool_calls=[ToolCall("c9", "tool", '{"q":1}')],
                                  usage={"prompt_tokens": 1, "completion_tokens": 1,
                                         "total_tokens": 2}),
        "event": AgentEvent(EventType.TEXT, {"delta": "evt"}),
        "list": ["l1", None, AgentEvent(EventType.TEXT, {"delta": "l2"})],
        "gen": (x for x in ("g1", None, "g2")),
        "int": 7,
        "bad_yield": (x for x in ("ok", 3.14)),
        "thread": threading.current_thread().name,
    }
    return shapes[mode]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from conftest import run_server

    with run_server(AgentRunServer(_server_agent)) as url:
        yield url


def post(base_url: str, mode: str, stream: bool = False) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": mode}], "stream": stream}
    return httpx.post(base_url + "/v1/chat/completions", json=body, timeout=10)


def sse_chunks(response: httpx.Response) -> list[Any]:
    frames = [f[len("data: "):] for f in response.text.split("\n\n") if f]
    return [f if f == "[DONE]" else json.loads(f) for f in frames]


@pytest.mark.parametrize(
    "mode, content, reasoning",
    [
        ("str", "plain", None),
        ("dict", "from dict", "dr"),
        ("response", "resp", "rr"),
        ("event", "evt", None),
        ("list", "l1l2", None),
        ("gen", "g1g2", None),
    ],
)
def test_shapes_through_server(base_url: str, mode: str, content: str, reasoning: str) -> None:
    whole = post(base_url, mode)
    assert whole.status_code == 200, whole.text
    message = whole.json()["choices"][0]["message"]
    assert message["content"] == content
    assert message.get("reasoning_content") == reasoning

    streamed = sse_chunks(post(base_url, mode, stream=True))
    assert streamed[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in streamed[:-1]]
    assert "".join(d.get("content", "") for d in deltas) == content
    if reasoning:
        assert "".join(d.get("reasoning_content", "") for d in deltas) == reasoning


def test_agent_response_through_server(base_url: str) -> None:
    body = post(base_url, "response").json()
    message = body["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"id": "c9", "type": "function", "function": {"name": "tool", "arguments": '{"q":1}'}}
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def test_unsupported_values_through_server_then_keeps_serving(base_url: str) -> None:
    bad = post(base_url, "int")
    assert bad.status_code == 500
    error = bad.json()["error"]
    assert "unsupported value of type int" in error["message"]
    assert error["type"] == "server_error"

    chunks = sse_chunks(post(base_url, "int", stream=True))
    assert "unsupported value of type int" in chunks[-1]["error"]["message"]

    bad_yield = post(base_url, "bad_yield")
    assert bad_yield.status_code == 500
    assert "type float" in bad_yield.json()["error"]["message"]
    chunks = sse_chunks(post(base_url, "bad_yield", stream=True))
    assert chunks[0]["choices"][0]["delta"]["content"] == "ok"
    assert "type float" in chunks[-1]["error"]["message"]

    assert post(base_url, "str").json()["choices"][0]["message"]["content"] == "plain"


def test_sync_agent_runs_in_worker_thread_through_server(base_url: str) -> None:
    name = post(base_url, "thread").json()["choices"][0]["message"]["content"]
    assert name != "MainThread" and name != "uvicorn-test"


def test_message_text_joins_only_string_text_parts() -> None:
    from agentrun_asgi import Message, MessageRole

    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}},
             {"type": "text", "text": None}, "junk", {"type": "text", "text": "b"}]
    assert Message(MessageRole.USER, parts).text == "ab"  # type: ignore[arg-type]
    assert Message(MessageRole.USER, None).text == ""
    assert Message(MessageRole.USER, "plain").text == "plain"


# Once known gaps in invoker.py (were strict xfails; fixed).


def test_partial_of_async_function_detected_as_async() -> None:
    assert Invoker(functools.partial(_prefixed_async, "p")).is_async
    assert Invoker(functools.partial(_prefixed_agen, "p")).is_async_gen


@pytest.mark.anyio
async def test_bytes_return_error_names_bytes() -> None:
    with pytest.raises(AgentOutputError, match="type bytes"):
        await collect(lambda r: b"raw bytes")


async def _async_server_agent(request: AgentRequest) -> Any:
    """An async function: the non-stream OpenAI path awaits it itself (no frame of the invoker's
    around it) and adapts whatever it returns."""
    mode = request.messages[-1].text

    async def agen() -> AsyncIterator[str]:
        yield "a1"
        yield "a2"

    async def later() -> str:
        return "awaited"

    if mode == "agen":
        return agen()
    if mode == "awaitable":
        return later()  # a coroutine, awaited in turn
    if mode == "fail":
        raise RuntimeError("agent broke")
    return _server_agent(request)


@pytest.mark.parametrize(
    "mode, status, content",
    [("agen", 200, "a1a2"), ("awaitable", 200, "awaited"), ("str", 200, "plain"),
     ("dict", 200, "from dict"), ("list", 200, "l1l2"), ("gen", 200, "g1g2"),
     ("int", 500, None), ("fail", 500, None)],
)  # fmt: skip
def test_async_function_shapes_non_stream(mode: str, status: int, content: str | None) -> None:
    from asgi_driver import call

    body = json.dumps({"messages": [{"role": "user", "content": mode}]}).encode()
    server = AgentRunServer(_async_server_agent)
    r = asyncio.run(call(server, "POST", "/v1/chat/completions", body))
    assert r.status == status, r.body
    if content is not None:
        assert r.json()["choices"][0]["message"]["content"] == content


def test_an_agent_that_cannot_take_the_request_is_refused_when_the_server_is_built() -> None:
    """A function of no argument, or an ASGI app passed as the agent, used to be served: every
    request was then a 500 naming a missing argument, far from the mistake."""
    from starlette.applications import Starlette

    with pytest.raises(TypeError, match=r"must take one argument, the request: \(\)"):
        AgentRunServer(lambda: "hi")
    with pytest.raises(TypeError, match="is an ASGI app, not an agent function"):
        AgentRunServer(Starlette())

    def two(prefix: str, request: Any) -> str:
        return prefix

    def decorated(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:  # what is called: takes the request
            return func("ok", *args, **kwargs)

        return wrapper

    class Agent:
        def __call__(self, request: Any) -> str:
            return "ok"

    async def defaulted(request: Any, retries: int = 3) -> str:
        return "ok"

    for agent in (functools.partial(two, "ok"), decorated(two), Agent(), defaulted, print):
        AgentRunServer(agent)  # accepted: each can be called as agent(request)


def _yields_lists(request: AgentRequest) -> Iterator[Any]:
    yield ["a", None, AgentEvent(EventType.REASONING, {"delta": "r"})]
    yield AgentResponse(content="c", events=["b", None, {"content": "d"}])  # type: ignore[list-item]
    yield ("e", [AgentEvent(EventType.TEXT, {"delta": "f"})])


def test_yielded_lists_and_response_events_are_expanded_on_every_protocol(serve: Any) -> None:
    """README: an agent "may return or yield" a list of the other shapes, "each in turn", and
    a yielded ``AgentResponse``'s ``events`` are expanded as a returned one's are. A yielded
    list was "unsupported value of type list", and a ``None`` or dict among a yielded answer's
    events failed the run ("'NoneType' object has no attribute 'data'") where the same answer
    returned was served."""
    import openai
    from agui_verify import parse_sse, verify

    from agentrun_asgi import AGUIProtocolHandler, OpenAIProtocolHandler
    from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

    server = AgentRunServer(_yields_lists, protocols=[
        OpenAIProtocolHandler(), AGUIProtocolHandler(), OpenAIResponsesProtocolHandler()])
    with serve(server) as base:
        oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
        whole = oai.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        with oai.chat.completions.stream(model="m", messages=USER) as stream:  # type: ignore[arg-type]
            streamed = stream.get_final_completion()
        for completion in (whole, streamed):
            message = completion.choices[0].message
            assert message.content == "abdcef"
            assert (message.model_extra or {}).get("reasoning_content") == "r"
        assert oai.responses.create(model="m", input="hi").output_text == "abdcef"
        with oai.responses.stream(model="m", input="hi") as rstream:
            assert rstream.get_final_response().output_text == "abdcef"
        agui = httpx.post(base + "/ag-ui/agent", json={"messages": USER}, timeout=10)
    events = verify(parse_sse(agui.content))
    assert events[-1]["type"] == "RUN_FINISHED"
    assert "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT") == "abdcef"
