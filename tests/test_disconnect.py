"""A client that goes away cancels its agent, whatever the agent's shape, stream or not.

Against a real uvicorn: a raw socket sends the request, reads the first frame (or waits for the
agent to start), then closes. Measured: the time from the close to the agent's ``finally``
(printed; the design target is 100 ms, the assert only a 2 s bound against hangs), and what is
left behind: asyncio tasks on the server's loop, worker threads still inside the agent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import orjson
import pytest
from apps.process import free_port, server_process
from asgi_driver import call, make_scope
from rawhttp import connect, read_until, send_json

import agentrun_asgi.dispatch as dispatch
import agentrun_asgi.streaming as streaming
from agentrun_asgi import AgentRequest, AgentRunServer

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
AGUI = {"threadId": "t", "runId": "r", "messages": [{"id": "m", "role": "user", "content": "hi"}]}
SHAPES = ["async_gen", "sync_gen", "async_fn", "sync_fn"]


class Probe:
    """The agent's side of the test: when it started, when its ``finally`` ran."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finalized = threading.Event()
        self.finalized_at = 0.0

    def done(self) -> None:
        self.finalized_at = time.perf_counter()
        self.finalized.set()


def make_agent(shape: str, probe: Probe) -> Callable[[AgentRequest], Any]:
    if shape == "async_gen":

        async def async_gen(request: AgentRequest) -> AsyncIterator[str]:
            probe.started.set()
            try:
                while True:
                    yield "tick "
                    await anyio.sleep(0.01)
            finally:
                probe.done()

        return async_gen
    if shape == "sync_gen":

        def sync_gen(request: AgentRequest) -> Iterator[str]:
            probe.started.set()
            try:
                while True:
                    yield "tick "
                    time.sleep(0.01)
            finally:
                probe.done()

        return sync_gen
    if shape == "async_fn":

        async def async_fn(request: AgentRequest) -> str:
            probe.started.set()
            try:
                await anyio.sleep(30)  # an LLM call that takes its time
                return "late"
            finally:
                probe.done()

        return async_fn

    def sync_fn(request: AgentRequest) -> str:
        probe.started.set()
        try:
            time.sleep(0.3)  # blocks its worker thread briefly
            return "done"
        finally:
            probe.done()

    return sync_fn


class LoopHandle:
    """The server's event loop (captured at startup), to count its tasks from the test."""

    loop: asyncio.AbstractEventLoop

    def capture(self) -> None:
        self.loop = asyncio.get_running_loop()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # minus this one

        return int(self.run(count()))

    def warm_thread_pool(self, n: int = 4) -> None:
        """Start ``n`` idle worker threads, so that a count of threads is stable afterwards."""

        async def warm() -> None:
            async with anyio.create_task_group() as tasks:
                for _ in range(n):
                    tasks.start_soon(anyio.to_thread.run_sync, time.sleep, 0.05)

        self.run(warm())


def threads_inside(code: Any) -> int:
    """How many threads are executing ``code`` right now."""
    count = 0
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            if f.f_code is code:
                count += 1
                break
            f = f.f_back
    return count


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("mode", ["stream", "json", "agui"])
@pytest.mark.parametrize("shape", SHAPES)
def test_disconnect_cancels_agent(serve: Any, shape: str, mode: str) -> None:
    probe = Probe()
    agent = make_agent(shape, probe)
    handle = LoopHandle()
    server = AgentRunServer(agent, on_startup=[handle.capture])
    with serve(server) as base:
        handle.warm_thread_pool()
        assert httpx.get(base + "/health").status_code == 200
        time.sleep(0.05)  # let the health connection close
        tasks_before = handle.task_count()
        threads_before = threading.active_count()

        sock = connect(base)
        if mode == "agui":
            send_json(sock, "/ag-ui/agent", AGUI)
        else:
            send_json(sock, "/v1/chat/completions", {**CHAT, "stream": mode == "stream"})
        if mode == "json":
            assert probe.started.wait(5)
        elif shape.endswith("gen"):
            read_until(sock, b"tick")  # a first content frame
        else:
            read_until(sock, b"\r\n\r\n")  # the response head: the agent has no frame yet
            assert probe.started.wait(5)
        closed_at = time.perf_counter()
        sock.close()

        assert probe.finalized.wait(5), "the agent's finally never ran"
        latency = probe.finalized_at - closed_at
        ms = latency * 1000
        print(f"\n[disconnect] {shape:9s} {mode:6s} close -> agent finally: {ms:.1f} ms")
        assert latency < 2.0

        code = agent.__code__
        assert wait_for(lambda: threads_inside(code) == 0), "a thread is still in the agent"
        assert wait_for(lambda: handle.task_count() <= tasks_before), (
            f"tasks left behind: {handle.task_count()} > {tasks_before}"
        )
        assert threading.active_count() <= threads_before
        # The server goes on serving.
        assert httpx.get(base + "/v1/models").status_code == 200


def test_is_disconnected_tells_the_agent_its_client_left(serve: Any) -> None:
    """``await request.raw_request.is_disconnected()`` (Starlette's name, which ported agents
    call): False while the client is there, True in the agent's own handling of the stop the
    disconnect brought."""
    seen: list[bool] = []
    done = threading.Event()

    async def agent(request: AgentRequest) -> str:
        raw = request.raw_request
        seen.append(await raw.is_disconnected())
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(await raw.is_disconnected())
            raise
        finally:
            done.set()
        return "never"

    with serve(AgentRunServer(agent)) as base:
        sock = connect(base)
        send_json(sock, "/v1/chat/completions", CHAT)
        assert wait_for(lambda: len(seen) == 1, 5)
        time.sleep(0.1)  # past the guard's first sweep: the watcher reads receive
        sock.close()
        assert done.wait(5), "the agent was not stopped"
    assert seen == [False, True]


def test_disconnect_cancels_agent_of_an_app_served_by_two_loops(serve: Any) -> None:
    """One server object behind two uvicorn servers, each in a thread with its event loop: a
    request on either one still has its disconnect seen. The loops used to take the one sweep
    from each other, dropping the requests it was waiting to watch: a client that left was
    never noticed, and its agent ran on for nobody."""
    probe = Probe()
    endless = make_agent("async_gen", probe)

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        if request.stream:  # the one stream; the other loop's requests answer at once
            async for piece in endless(request):
                yield piece
        else:
            yield "quick"

    server = AgentRunServer(agent)
    with serve(server) as first, serve(server) as second:
        stop = threading.Event()
        flowing = threading.Event()

        def other_traffic() -> None:  # the other loop keeps arming the sweep on its side
            with httpx.Client(base_url=second) as client:
                while not stop.is_set():
                    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                    flowing.set()

        traffic = threading.Thread(target=other_traffic)
        traffic.start()
        try:
            assert flowing.wait(10)
            sock = connect(first)
            send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
            read_until(sock, b"tick")
            time.sleep(0.2)  # several sweeps with the stream and the traffic both in flight
            sock.close()
            assert probe.finalized.wait(5), "the agent's finally never ran"
        finally:
            stop.set()
            traffic.join(10)


def test_disconnect_while_body_is_uploading(serve: Any) -> None:
    """A client gone before its body is complete never reaches the agent."""
    probe = Probe()
    with serve(AgentRunServer(make_agent("async_fn", probe))) as base:
        sock = connect(base)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mess")
        time.sleep(0.2)
        sock.close()
        time.sleep(0.2)
        assert not probe.started.is_set()
        assert httpx.get(base + "/health").status_code == 200


def test_sync_generator_closed_in_its_thread_right_after_next_returns() -> None:
    """A cancelled run does not wait for a blocked ``next()``; that step closes the generator."""
    from agentrun_asgi import Invoker

    release = threading.Event()
    record: dict[str, Any] = {}

    def gen(request: AgentRequest) -> Iterator[str]:
        record["step_thread"] = threading.current_thread()
        try:
            yield "a"
            record["step_thread"] = threading.current_thread()
            release.wait(5)  # a slow next(): a model call without a timeout
            yield "b"
        finally:
            record["close_thread"] = threading.current_thread()
            record["released"] = release.is_set()

    async def main() -> float:
        stream = Invoker(gen).stream(AgentRequest())
        assert await stream.__anext__() == "a"
        started = time.perf_counter()
        with anyio.move_on_after(0.1):
            await stream.__anext__()
        await stream.aclose()
        return time.perf_counter() - started

    waited = asyncio.run(main())
    assert waited < 1.0  # the cancellation did not wait for the thread
    assert "close_thread" not in record  # the generator is still inside next()
    release.set()
    assert wait_for(lambda: "close_thread" in record)
    assert record["released"]
    assert record["close_thread"] is record["step_thread"]


@pytest.mark.parametrize("stop", ["disconnect", "timeout"])
def test_run_stopped_while_its_write_waits_on_a_slow_reader(serve: Any, stop: str) -> None:
    """The agent is paused mid-step while its frames wait on flow control; a stop there still
    closes it (its ``finally`` runs) and, unless the client left, ends the stream with a frame."""
    probe = Probe()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        probe.started.set()
        try:
            while True:  # faster than the client reads: the server's writes back up
                yield "x" * 60_000
                await anyio.sleep(0)
        finally:
            await anyio.sleep(0.01)  # async cleanup (closing a model client, say)
            probe.done()

    timeout = 0.5 if stop == "timeout" else None
    server = AgentRunServer(agent, request_timeout=timeout)
    with serve(server) as base:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((urlsplit(base).hostname, urlsplit(base).port))
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        read_until(sock, b"xxxx")
        time.sleep(1.0)  # reads nothing: the writes wait, and the deadline passes
        if stop == "disconnect":
            sock.close()
        else:
            tail = b""
            while b"0\r\n\r\n" not in tail[-64:]:
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed before the end of the stream"
                tail = (tail + chunk)[-4096:]
            assert b'"code":"timeout"' in tail
            sock.close()
        assert probe.finalized.wait(5), "the agent's finally never ran"
        assert wait_for(lambda: not server.lifecycle.runs)
        assert httpx.get(base + "/health").status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent"])
def test_stopped_stream_to_a_client_that_never_reads_is_given_up(
    serve: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The deadline stops a stream whose client stays connected but reads nothing: its error
    frame can never be written. The run must still end, within a bound, and the connection be
    closed; before, the shielded last write waited for ever, holding the request's task and
    its buffers, and keeping shutdown's drain waiting for it."""
    monkeypatch.setattr(streaming, "LAST_WRITE_TIMEOUT", 0.5)
    probe = Probe()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        probe.started.set()
        try:
            while True:
                yield "x" * 60_000
                await anyio.sleep(0)
        finally:
            probe.done()

    server = AgentRunServer(agent, request_timeout=0.5)
    with serve(server) as base:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((urlsplit(base).hostname, urlsplit(base).port))
        body = {**CHAT, "stream": True} if path.startswith("/v1") else AGUI
        send_json(sock, path, body)
        read_until(sock, b"xxxx")
        try:
            assert probe.finalized.wait(5), "the agent's finally never ran"
            assert wait_for(lambda: not server.lifecycle.runs, timeout=5), "the run never ended"
            # The server gave up on the connection: reading now drains it to its end.
            sock.settimeout(5)
            while sock.recv(1 << 20):
                pass
        finally:
            sock.close()
        assert httpx.get(base + "/health").status_code == 200


def read_stream_to_its_end(sock: socket.socket) -> bytes:
    """What is left of a chunked response (its last 64 KiB), read up to its terminator."""
    tail = b""
    while b"0\r\n\r\n" not in tail[-64:]:
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed before the end of the stream: {tail[-300:]!r}"
        tail = (tail + chunk)[-65536:]
    return tail


def test_an_agent_that_turns_its_stop_into_an_error_still_ends_with_the_stop_frame(
    serve: Any,
) -> None:
    """The stop reaches the agent where it waits, and its cleanup raises instead: the run was
    still stopped, and the stream ends as a stopped one (the agent's error goes to the log).
    Written as an agent failure, the last frame was an unbounded write past the deadline."""
    probe = Probe()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        probe.started.set()
        yield "first "
        try:
            await anyio.sleep(30)
        finally:
            probe.done()
            raise RuntimeError("cleanup failed")

    with serve(AgentRunServer(agent, request_timeout=0.3)) as base:
        sock = connect(base)
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        tail = read_stream_to_its_end(sock)
        sock.close()
        assert b'"code":"timeout"' in tail
        assert b"cleanup failed" not in tail
        assert probe.finalized.is_set()


@pytest.mark.parametrize("shape", ["async_gen", "sync_gen"])
def test_an_agent_whose_cleanup_raises_after_a_stop_still_ends_with_the_stop_frame(
    serve: Any, shape: str
) -> None:
    """Stopped while a big write waits on a slow reader (the agent paused at its ``yield``),
    the agent is closed and its ``finally`` raises: the stream still ends with the stop's
    frame, instead of a bare end of body sent by the guard with no deadline left."""
    probe = Probe()
    big = "x" * 70_000  # one item past MAX_CHUNK: written on its own, the agent at its yield

    async def async_gen(request: AgentRequest) -> AsyncIterator[str]:
        probe.started.set()
        try:
            while True:
                yield big
        finally:
            probe.done()
            raise RuntimeError("cleanup failed")

    def sync_gen(request: AgentRequest) -> Iterator[str]:
        probe.started.set()
        try:
            while True:
                yield big
        finally:
            probe.done()
            raise RuntimeError("cleanup failed")

    agent = async_gen if shape == "async_gen" else sync_gen
    server = AgentRunServer(agent, request_timeout=0.5)
    with serve(server) as base:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((urlsplit(base).hostname, urlsplit(base).port))
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        read_until(sock, b"xxxx")
        assert probe.finalized.wait(5), "the run was not stopped at its deadline"
        tail = read_stream_to_its_end(sock)
        sock.close()
        assert b'"code":"timeout"' in tail
        assert wait_for(lambda: not server.lifecycle.runs)


@pytest.mark.parametrize("end", ["hitl", "error"])
def test_agent_cleanup_after_an_early_end_is_not_taken_for_a_disconnect(
    serve: Any, end: str
) -> None:
    """A run that ends the stream itself (an interrupt, an error event) is closed once the last
    frame is out; uvicorn then answers ``receive()`` with ``http.disconnect`` although the
    client is still there, which must not cancel the agent's cleanup."""
    from agentrun_asgi import AgentEvent, EventType

    record: dict[str, str] = {}

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        try:
            await anyio.sleep(0.1)  # long enough for a disconnect watcher
            if end == "hitl":
                yield AgentEvent(EventType.HITL, {"id": "h1", "type": "approval", "prompt": "ok?"})
            else:
                yield AgentEvent(EventType.ERROR, {"message": "bad input"})
            yield "never sent"
        finally:
            try:
                await anyio.sleep(0.05)  # async cleanup: save the thread, close a client...
                record["cleanup"] = "complete"
            except BaseException as exc:
                record["cleanup"] = type(exc).__name__
                raise

    with serve(AgentRunServer(agent)) as base:
        response = httpx.post(base + "/ag-ui/agent", json=AGUI)
        assert response.status_code == 200
        assert ("RUN_FINISHED" if end == "hitl" else "RUN_ERROR") in response.text
        assert wait_for(lambda: "cleanup" in record)
        assert record["cleanup"] == "complete"


@pytest.mark.parametrize("stop", ["disconnect", "timeout"])
def test_stream_stops_even_if_the_agent_swallows_its_cancellation(serve: Any, stop: str) -> None:
    """Some agent code takes the ``CancelledError`` and goes on yielding (a bare ``except``, a
    library that retries): the stream still stops there, instead of producing for nobody or
    past its deadline, and the agent is closed."""
    probe = Probe()
    produced = [0]

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        probe.started.set()
        try:
            for _ in range(1000):  # bounded, so that a failure ends in 10 s, not never
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    pass
                produced[0] += 1
                yield "tick "
        finally:
            probe.done()

    timeout = 0.3 if stop == "timeout" else None
    server = AgentRunServer(agent, request_timeout=timeout)
    with serve(server) as base:
        sock = connect(base)
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        if stop == "disconnect":
            read_until(sock, b"tick")
            time.sleep(0.1)  # the watcher is on
            sock.close()
        else:
            body = read_until(sock, b"0\r\n\r\n")
            assert b'"code":"timeout"' in body
            sock.close()
        assert probe.finalized.wait(5), "the agent went on after its run was stopped"
        assert produced[0] < 500
        assert wait_for(lambda: not server.lifecycle.runs)


# -- other event loops (trio): the anyio path of the guard ---------------------------------------


def test_disconnect_stops_a_silent_agent_on_the_anyio_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an asyncio task the guard runs the endpoint under an anyio cancel scope (forced
    here on asyncio by hiding the task); a client that leaves must still stop the agent."""
    monkeypatch.setattr(dispatch, "_task_of", lambda loop: None)
    probe = Probe()
    server = AgentRunServer(make_agent("async_fn", probe))

    async def main() -> None:
        gone = asyncio.Event()
        body = orjson.dumps({**CHAT, "stream": True})
        pending = asyncio.ensure_future(
            call(server, "POST", "/v1/chat/completions", body, disconnect=gone)
        )
        await asyncio.to_thread(probe.started.wait, 5)
        gone.set()
        await asyncio.wait_for(pending, 5)

    asyncio.run(main())
    assert probe.finalized.is_set()
    assert not server.lifecycle.runs


def test_disconnect_during_the_shutdown_grace_stops_the_run_on_the_anyio_path(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under another event loop the shutdown puts its deadline on the run's cancel scope; a
    client that leaves during the grace period must still stop its agent at once, not when the
    grace period ends (forced on asyncio by hiding the task, under a real uvicorn)."""
    monkeypatch.setattr(dispatch, "_task_of", lambda loop: None)
    probe = Probe()
    handle = LoopHandle()
    server = AgentRunServer(
        make_agent("async_gen", probe), shutdown_grace=60, on_startup=[handle.capture]
    )

    async def begin_shutdown() -> None:
        server.begin_shutdown()

    with serve(server, timeout_graceful_shutdown=1) as base:
        sock = connect(base)
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        read_until(sock, b"tick")
        handle.run(begin_shutdown())
        sock.close()
        assert probe.finalized.wait(5), "the run went on for nobody until the end of the grace"
        assert wait_for(lambda: not server.lifecycle.runs)


def test_disconnect_cancels_agent_under_hypercorn_trio(tmp_path: Any) -> None:
    """hypercorn's trio worker drops a ``send`` to a gone client without an error, so only a
    watcher on ``receive`` can see the client leave."""
    pytest.importorskip("trio")
    pytest.importorskip("hypercorn")
    mark = tmp_path / "mark"
    port = free_port()
    args = ["-m", "hypercorn", "tests.apps.silent_app:app", "--worker-class", "trio",
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    with server_process(args, port, env={"AGENTRUN_TEST_MARK": str(mark)}) as proc:
        sock = connect(proc.base_url)
        send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
        read_until(sock, b"tick")
        sock.close()
        finalized = wait_for(lambda: mark.exists() and "finally" in mark.read_text(), 5)
        assert finalized, f"the agent's finally never ran:\n{proc.output()}"


@pytest.mark.parametrize("stop", ["disconnect", "timeout"])
@pytest.mark.parametrize("when", ["before_its_first_step", "between_its_steps"])
def test_sync_generator_stopped_while_it_waits_for_a_worker_thread(
    serve: Any, stop: str, when: str
) -> None:
    """Every worker thread is taken (the limit is one here, held by another task) when a sync
    generator's run is stopped while its next step waits for one. The run must end at once: a
    generator that never started is closed on the spot (the agent never runs), one paused at a
    ``yield`` has its ``finally`` run in a worker thread that does not queue for the pool.
    Before, the close queued for a thread too: the timeout's frame, or the end of a
    disconnected run, waited until some other agent let its thread go."""
    release = threading.Event()
    handle = LoopHandle()
    record: dict[str, Any] = {}

    async def one_thread() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

    async def take_the_thread() -> None:
        asyncio.get_running_loop().create_task(anyio.to_thread.run_sync(release.wait, 10))

    def agent(request: AgentRequest) -> Iterator[str]:
        record["ran"] = True
        try:
            anyio.from_thread.run(take_the_thread)  # queued for the thread this step holds
            time.sleep(0.1)
            yield "first "
            yield "second "
        finally:
            record["finally_thread"] = threading.current_thread()

    timeout = 0.5 if stop == "timeout" else None
    server = AgentRunServer(agent, request_timeout=timeout, on_startup=[handle.capture, one_thread])
    with serve(server) as base:
        try:
            if when == "before_its_first_step":
                handle.run(take_the_thread())
            sock = connect(base, timeout=3)
            send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
            if when == "between_its_steps":
                read_until(sock, b"first")
            if stop == "disconnect":
                time.sleep(0.2)  # the watcher is on
                sock.close()
            else:
                # Read while the only thread is still held (``release`` is set at the end):
                # a close queued for it would keep the frame past the socket's timeout.
                tail = read_until(sock, b"0\r\n\r\n")
                sock.close()
                assert b'"code":"timeout"' in tail
            assert wait_for(lambda: not server.lifecycle.runs), "the run waited for a thread"
            if when == "before_its_first_step":
                assert "ran" not in record
            else:
                assert wait_for(lambda: "finally_thread" in record)
                assert record["finally_thread"] is not threading.main_thread()
                assert record["finally_thread"].name.startswith("AnyIO worker")
        finally:
            release.set()


def test_sync_generator_cleanup_failing_after_its_step_is_logged(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync generator stopped during a ``next()`` is closed by that step, in its thread, after
    the run has ended; an exception from its ``finally`` there was dropped without a word. It is
    logged, as for a generator closed by the run, with the request's id."""
    closed = threading.Event()

    def agent(request: AgentRequest) -> Iterator[str]:
        try:
            yield "first "
            time.sleep(0.5)  # the client leaves during this step
            yield "late"
        finally:
            closed.set()
            raise RuntimeError("cleanup failed")

    with caplog.at_level(logging.WARNING, logger="agentrun_asgi"):
        with serve(AgentRunServer(agent)) as base:
            sock = connect(base)
            send_json(sock, "/v1/chat/completions", {**CHAT, "stream": True})
            head = read_until(sock, b"first").decode()
            request_id = head.split("x-request-id: ")[1].split("\r\n")[0]
            time.sleep(0.1)  # the watcher is on
            sock.close()
            assert closed.wait(5)

            def logged() -> list[logging.LogRecord]:
                return [r for r in caplog.records
                        if r.exc_info and "cleanup failed" in str(r.exc_info[1])]  # fmt: skip

            assert wait_for(lambda: bool(logged())), "the agent's failure went unlogged"
    record = logged()[0]
    assert record.levelno == logging.WARNING
    assert request_id in record.getMessage()


def test_sweep_keeps_a_request_another_loop_adds_while_it_runs() -> None:
    """With one app served by two loops, a request of the loop that does not sweep is added
    to ``fresh`` from that loop's thread, which may have read the list just before the sweep
    on the other thread took it. The sweep used to swap in a new list: the late addition went
    to the old one, and that request was never watched (its client's leaving never seen)."""
    from agentrun_asgi.guard import Lifecycle
    from agentrun_asgi.requests import Request

    lifecycle = Lifecycle(1.0)
    loop = asyncio.new_event_loop()

    async def in_flight() -> None:
        await asyncio.sleep(10)

    task = loop.create_task(in_flight())
    try:
        request = Request(make_scope("POST", "/v1/chat/completions"), in_flight, 1024)  # type: ignore[arg-type]
        request._body = b"{}"  # read already
        lifecycle.runs[task] = request
        lifecycle.sweeping = loop
        fresh_as_read = lifecycle.fresh  # the other thread has read the list...
        lifecycle._sweep(loop)  # ...when this thread's sweep takes what it holds
        fresh_as_read.append(task)  # and then appends
        lifecycle._sweep(loop)  # looked at: waiting for a whole period
        lifecycle._sweep(loop)  # lived through it: watched
        assert request.run is not None and request.run.watcher is not None
    finally:
        left = asyncio.all_tasks(loop)
        for each in left:
            each.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()


def test_sweep_goes_on_when_another_loop_closes_under_it() -> None:
    """The sweep hands a request of another loop to that loop; if that loop closes between the
    sweep's look at it and the hand-off, ``call_soon_threadsafe`` raises. That used to end the
    sweep for good (never re-armed, its loop still marked as sweeping): no later request of the
    app was watched, and clients that left were never noticed."""
    from agentrun_asgi.guard import Lifecycle
    from agentrun_asgi.requests import Request

    lifecycle = Lifecycle(1.0)
    loop, other = asyncio.new_event_loop(), asyncio.new_event_loop()

    async def in_flight() -> None:
        await asyncio.sleep(10)

    def closed_meanwhile(*args: Any) -> None:
        raise RuntimeError("Event loop is closed")  # what a loop closed since says

    other.call_soon_threadsafe = closed_meanwhile  # type: ignore[method-assign]
    tasks = [other.create_task(in_flight()), loop.create_task(in_flight())]
    try:
        requests = []
        for task in tasks:
            request = Request(make_scope("POST", "/v1/chat/completions"), in_flight, 1024)  # type: ignore[arg-type]
            request._body = b"{}"
            lifecycle.runs[task] = request
            lifecycle.fresh.append(task)
            requests.append(request)
        lifecycle.sweeping = loop
        lifecycle._sweep(loop)  # looked at
        lifecycle._sweep(loop)  # handed off or watched
        assert requests[1].run is not None and requests[1].run.watcher is not None
        assert lifecycle.sweeping is loop and loop._scheduled  # type: ignore[attr-defined]
    finally:
        for each_loop in (loop, other):
            left = asyncio.all_tasks(each_loop)
            for each in left:
                each.cancel()
            each_loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            each_loop.close()
