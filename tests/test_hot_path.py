"""What keeps the request path lean, checked as behaviour (never as timings).

A served request must leave no reference cycle behind: garbage that only the cyclic collector
can free makes collections (and their pauses) scale with the request rate. Counted with
``gc.collect()``, which returns how many unreachable objects it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import orjson
import pytest
from apps.process import free_port
from asgi_driver import call
from rawhttp import connect, read_to_close, send_json, split_response

from agentrun_asgi import AgentRequest, AgentRunServer
from agentrun_asgi.requests import Request
from agentrun_asgi.routing import Route, Router

_R = TypeVar("_R")


async def tokens(request: AgentRequest) -> AsyncIterator[str]:
    for word in ("one ", "two ", "three"):
        yield word


def sync_tokens(request: AgentRequest) -> Iterator[str]:
    yield from ("one ", "two ", "three")


CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
CHAT_STREAM = orjson.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)
AGUI = orjson.dumps(
    {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user", "content": "hi"}]}
)
RESPONSES = orjson.dumps({"model": "m", "input": "hi"})

REQUESTS = [
    ("POST", "/v1/chat/completions", CHAT, 200),
    ("POST", "/v1/chat/completions", CHAT_STREAM, 200),
    ("POST", "/ag-ui/agent", AGUI, 200),
    ("POST", "/v1/responses", RESPONSES, 200),
    ("GET", "/v1/models", b"", 200),
    ("GET", "/health", b"", 200),
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("GET", "/nowhere", b"", 404),
]


@pytest.mark.parametrize("agent", [tokens, sync_tokens], ids=["async-gen", "sync-gen"])
@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
def test_a_request_leaves_no_reference_cycle(
    agent: Any, method: str, path: str, body: bytes, status: int
) -> None:
    server = AgentRunServer(agent)

    async def serve(times: int) -> None:
        for _ in range(times):
            response = await call(server, method, path, body)
            assert response.status == status, response.body

    async def garbage() -> tuple[int, int]:
        await serve(3)  # warm: first-use caches, the worker threads, lazy imports
        gc.collect()
        await serve(10)
        after_10 = gc.collect()
        await serve(50)
        return after_10, gc.collect()

    enabled = gc.isenabled()
    gc.disable()
    try:
        # One event loop for all of it: a loop's own end (its worker threads told to stop)
        # leaves a few cycles, more or fewer by when those threads exit. One cycle per request
        # would show as 50 against 10 of its size.
        after_10, after_50 = asyncio.run(garbage())
        assert after_50 - after_10 < 10
    finally:
        if enabled:
            gc.enable()


def requests_of(base_url: str, objects: list[Any]) -> int:
    """How many of ``objects`` are requests served at ``base_url`` (not another test's)."""
    port = int(base_url.rsplit(":", 1)[1])
    return sum(
        type(obj) is Request and (obj.scope.get("server") or (None, None))[1] == port
        for obj in objects
    )


def requests_left_in_cycles(
    server: AgentRunServer, base_url: str, request: Callable[[], _R], count: int
) -> tuple[list[_R], int]:
    """Make ``count`` requests (after one to warm up) and count the server's ``Request``
    objects that only the cyclic garbage collector could free."""
    request()  # warm: the worker threads, lazy imports
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept, to be looked at
    try:
        results = [request() for _ in range(count)]
        deadline = time.monotonic() + 5
        while server.lifecycle.runs and time.monotonic() < deadline:
            time.sleep(0.01)
        gc.collect()
        return results, requests_of(base_url, gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def failing_sync_function(request: AgentRequest) -> str:
    raise RuntimeError("agent broke")


def failing_sync_generator(request: AgentRequest) -> Iterator[str]:
    yield "partial "
    raise RuntimeError("agent broke")


async def own_cancel_async_function(request: AgentRequest) -> str:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future  # a CancelledError nobody sent the run: the agent's error
    return "never"


@pytest.mark.parametrize(
    "agent",
    [failing_sync_function, failing_sync_generator,
     pytest.param(own_cancel_async_function, marks=pytest.mark.skipif(
         sys.version_info < (3, 11), reason="no Task.cancelling()"))],
    ids=["sync-fn", "sync-gen", "async-fn-own-cancel"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v1/chat/completions", CHAT_STREAM),
     ("/ag-ui/agent", AGUI), ("/v1/responses", RESPONSES)],
    ids=["chat", "chat-stream", "agui", "responses"],
)  # fmt: skip
def test_an_agent_that_raises_leaves_no_request_in_a_cycle(
    serve: Any, monkeypatch: pytest.MonkeyPatch, agent: Any, path: str, body: bytes
) -> None:
    """An exception of the agent's code in a worker thread used to come back through anyio's
    frame, whose future holds it while the frame is in the exception's own traceback: a cycle
    keeping each failed request (its body, the agent's frames) until a full collection. An
    async agent's own cancellation, answered as an error, must not keep one either."""
    # pytest keeps every log record, the exception and its frames with it: not here.
    server_logger = logging.getLogger("agentrun_asgi")
    monkeypatch.setattr(server_logger, "propagate", False)
    monkeypatch.setattr(server_logger, "handlers", [logging.NullHandler()])
    server = AgentRunServer(agent)

    def post() -> int:
        sock = connect(base)
        try:
            send_json(sock, path, orjson.loads(body), {"Connection": "close"})
            return split_response(read_to_close(sock))[0]
        finally:
            sock.close()

    with serve(server) as base:
        results, kept = requests_left_in_cycles(server, base, post, 5)
    assert set(results) <= {200, 500}
    assert kept == 0, f"{kept} requests were freed only by the cyclic garbage collector"


@contextlib.contextmanager
def hypercorn_trio(app: Any) -> Iterator[str]:
    """Serve ``app`` with hypercorn on trio in a thread of this process; yields the base URL."""
    trio = pytest.importorskip("trio")
    pytest.importorskip("hypercorn")
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    ready = threading.Event()
    handles: dict[str, Any] = {}

    async def main() -> None:
        handles["stop"] = trio.Event()
        handles["token"] = trio.lowlevel.current_trio_token()
        ready.set()
        await serve(app, config, shutdown_trigger=handles["stop"].wait)

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(base, timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "hypercorn did not start"
            time.sleep(0.02)
    try:
        yield base
    finally:
        trio.from_thread.run_sync(handles["stop"].set, trio_token=handles["token"])
        thread.join(10)


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT_STREAM), ("/ag-ui/agent", AGUI)],
    ids=["chat-stream", "agui"],
)  # fmt: skip
def test_a_stream_stopped_on_trio_leaves_no_request_in_a_cycle(path: str, body: bytes) -> None:
    """On trio the stop reaches the agent through ``_Resume``, which trio resumes by sending
    an ``Error`` outcome; kept in the frame, it held the ``Cancelled`` whose traceback holds
    that frame, and with it each stopped request."""

    async def slow(request: AgentRequest) -> AsyncIterator[str]:
        yield "first "
        await anyio.sleep(30)

    server = AgentRunServer(slow, request_timeout=0.2)

    def post() -> bytes:
        sock = connect(base)
        try:
            send_json(sock, path, orjson.loads(body), {"Connection": "close"})
            return read_to_close(sock)
        finally:
            sock.close()

    with hypercorn_trio(server) as base:
        results, kept = requests_left_in_cycles(server, base, post, 3)
    tails = [result[-300:] for result in results]
    assert all(b"timeout" in tail for tail in tails), tails
    assert kept == 0, f"{kept} requests were freed only by the cyclic garbage collector"


def test_static_paths_take_the_shortcut_and_match_like_the_tree() -> None:
    async def endpoint(request: Any, send: Any) -> None:
        raise AssertionError

    router = Router(
        [Route("/v1/chat/completions", endpoint), Route("/v1/{name}", endpoint, ("GET",)),
         Route("/", endpoint, ("GET",))]
    )  # fmt: skip
    assert set(router._static) == {"/v1/chat/completions", "/"}
    for path in ("/v1/chat/completions", "/v1/chat/completions/", "//v1//chat/completions"):
        match = router.match(path)
        assert match is not None and match[2] is None and "POST" in match[0]
    assert router.match("/v1/models") == (match_of(router, "/v1/models"))
    assert router.match("/v1/chat/more") is None


def match_of(router: Router, path: str) -> Any:
    match = router.match(path)
    assert match is not None
    assert match[2] == {"name": path.rsplit("/", 1)[1]}
    return match


def endless_until_closed(closed: list[bool]) -> Any:
    """An agent that streams until it is stopped, noting in ``closed`` that its generator ended."""

    async def endless(request: AgentRequest) -> AsyncIterator[str]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield "tick "
        finally:
            closed.append(True)

    return endless


async def leave_after(server: AgentRunServer, delay: float) -> None:
    """Open a stream and disconnect ``delay`` seconds later; the response must still end."""
    gone = asyncio.Event()
    asyncio.get_running_loop().call_later(delay, gone.set)
    response = await asyncio.wait_for(
        call(server, "POST", "/v1/chat/completions", CHAT_STREAM, disconnect=gone), 5
    )
    assert response.status == 200


def test_disconnects_are_watched_on_every_loop_the_app_is_served_on() -> None:
    """The watcher sweep belongs to a loop: a second loop (a test, an embedding without
    lifespan) must arm its own, or its streams would never see their client leave."""
    closed: list[bool] = []
    server = AgentRunServer(endless_until_closed(closed))

    for _ in range(2):  # two loops, one after the other
        asyncio.run(leave_after(server, 0.1))
    assert closed == [True, True]


def test_the_guard_without_asyncio_tasks_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under another event loop (trio) there is no asyncio task to cancel: the dispatcher runs
    the endpoint under an anyio cancel scope instead. Forced here on asyncio, where anyio's
    scopes work too, by hiding the current task."""
    import agentrun_asgi.dispatch as dispatch

    monkeypatch.setattr(dispatch, "_task_of", lambda loop: None)

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        text = request.messages[-1].text
        if text == "slow":
            await asyncio.sleep(5)
        if text == "fail":
            raise RuntimeError("agent broke")
        yield "fine"

    server = AgentRunServer(agent, request_timeout=0.2)

    def chat(text: str, stream: bool = False) -> bytes:
        return orjson.dumps(
            {"messages": [{"role": "user", "content": text}], "stream": stream}
        )

    async def main() -> None:
        ok = await call(server, "POST", "/v1/chat/completions", chat("hi"))
        assert ok.status == 200 and ok.json()["choices"][0]["message"]["content"] == "fine"
        late = await asyncio.wait_for(call(server, "POST", "/v1/chat/completions", chat("slow")), 3)
        assert late.status == 504 and late.json()["error"]["code"] == "timeout"
        failed = await call(server, "POST", "/v1/chat/completions", chat("fail"))
        assert failed.status == 500 and failed.json()["error"]["message"] == "agent broke"
        stream = await asyncio.wait_for(
            call(server, "POST", "/v1/chat/completions", chat("slow", stream=True)), 3
        )
        assert stream.status == 200 and b'"code":"timeout"' in stream.body
        assert not server.lifecycle.runs  # every request left the registry

    asyncio.run(main())


def test_a_loop_closed_mid_request_does_not_stop_the_next_loop_watching() -> None:
    """A request left in flight by a loop that was closed without finishing it must not break
    the sweep on the loop that serves next (its watcher cannot start on a closed loop)."""
    closed: list[bool] = []
    server = AgentRunServer(endless_until_closed(closed))
    abandoned = asyncio.new_event_loop()
    task = abandoned.create_task(call(server, "POST", "/v1/chat/completions", CHAT_STREAM))
    abandoned.run_until_complete(asyncio.sleep(0.01))  # in flight, body read
    abandoned.close()  # without finishing it (a thread that died, say)
    assert not task.done() and server.lifecycle.runs

    asyncio.run(leave_after(server, 0.1))
    assert closed == [True]
    # End the abandoned request here rather than when it is collected, in another test.
    with contextlib.suppress(BaseException):
        task.get_coro().close()
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # it was left on purpose


@pytest.mark.parametrize("layers", [{}, {"access_log": True}])
def test_a_call_of_the_server_goes_straight_to_its_entry(layers: dict[str, Any]) -> None:
    """With no layers the server's call is the dispatcher's own (no frame of the server's per
    request); either way servers and frameworks see an ASGI 3 coroutine callable."""
    import inspect

    import uvicorn
    from starlette._utils import is_async_callable

    from agentrun_asgi.dispatch import Dispatcher

    server = AgentRunServer(tokens, **layers)
    entry = server.__call__
    assert inspect.iscoroutinefunction(entry) and is_async_callable(server)
    assert isinstance(getattr(entry, "__self__", None), Dispatcher) == (not layers)
    config = uvicorn.Config(server, lifespan="on")
    config.load()
    assert config.interface == "asgi3"
    r = asyncio.run(call(server, "POST", "/v1/chat/completions", CHAT))
    assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == "one two three"
