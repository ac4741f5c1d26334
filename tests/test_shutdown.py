"""Graceful shutdown: new requests get 503, runs in flight get a grace period, then the
protocol's final error frame; lifespan hooks and the ``lifespan`` context manager run."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
import orjson
import pytest
import uvicorn
from asgi_driver import call
from conftest import run_server
from rawhttp import sse_payloads

from agentrun_asgi import AgentRequest, AgentRunServer

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
AGUI = {"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": "hi"}]}


class Endless:
    """An agent that streams until it is stopped, and says when its ``finally`` ran."""

    def __init__(self, ticks: int | None = None) -> None:
        self.ticks = ticks
        self.started = threading.Event()
        self.finalized = threading.Event()

    async def agent(self, request: AgentRequest) -> AsyncIterator[str]:
        self.started.set()
        try:
            i = 0
            while self.ticks is None or i < self.ticks:
                yield f"t{i} "
                i += 1
                await anyio.sleep(0.02)
        finally:
            self.finalized.set()


class Lifespan:
    """Drives the ASGI lifespan protocol of an app in the current event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def __aenter__(self) -> Lifespan:
        self.task = asyncio.ensure_future(self.app(self.scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        assert (await self.outbox.get())["type"] == "lifespan.startup.complete"
        return self

    async def shutdown(self) -> dict[str, Any]:
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self.outbox.get()
        await self.task
        return message

    async def __aexit__(self, *exc: Any) -> None:
        if not self.task.done():
            await self.shutdown()


def chat_body(stream: bool = False) -> bytes:
    return orjson.dumps({**CHAT, "stream": stream})


# -- in process --------------------------------------------------------------------------------


def test_new_requests_get_503_after_shutdown() -> None:
    async def main() -> None:
        server = AgentRunServer(lambda r: "ok")
        async with Lifespan(server) as lifespan:
            assert (await call(server, "GET", "/health")).status == 200
            assert (await lifespan.shutdown())["type"] == "lifespan.shutdown.complete"
            for method, path in (("GET", "/health"), ("POST", "/v1/chat/completions")):
                r = await call(server, method, path, chat_body())
                assert r.status == 503
                assert r.header("connection") == "close"
                error = r.json()["error"]
                assert error["code"] == "server_shutting_down" and error["type"] == "server_error"

    asyncio.run(main())


def test_a_sigterm_the_event_loop_handles_begins_the_shutdown_at_once() -> None:
    """A server that handles SIGTERM with ``loop.add_signal_handler`` (granian's workers) and
    tells the app only after its drain: the app begins its shutdown at the signal (streams get
    ``shutdown_grace``, not the server's whole drain), the server's handler still runs, and the
    app gives the signal back at its shutdown."""
    told: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, told.append, "server")
        try:
            loops_own = signal.getsignal(signal.SIGTERM)
            # Two servers in one process (mounted side by side): each is told.
            servers = [AgentRunServer(lambda r: "ok"), AgentRunServer(lambda r: "ok")]
            async with Lifespan(servers[0]), Lifespan(servers[1]):
                assert not any(s.lifecycle.closing for s in servers)
                os.kill(os.getpid(), signal.SIGTERM)
                with anyio.fail_after(5):  # a hang guard
                    while not (told and all(s.lifecycle.closing for s in servers)):
                        await asyncio.sleep(0.01)
                assert told == ["server"]
                assert (await call(servers[0], "GET", "/health")).status == 503
            assert signal.getsignal(signal.SIGTERM) is loops_own
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())


def test_servers_stopped_in_the_order_they_started_give_the_sigterm_back() -> None:
    """Two servers of one host stopped first to last (a host's lifespan that starts a, b and
    stops a, b): the loop's own handler is back once both are down, and a stopped server is
    not kept alive by it. Each server took the signal from the one before: the last stopped
    gave back the first one's handler, which held that stopped server and its loop."""

    async def main() -> weakref.ref[AgentRunServer]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        try:
            loops_own = signal.getsignal(signal.SIGTERM)
            first, second = AgentRunServer(lambda r: "ok"), AgentRunServer(lambda r: "ok")
            await first.startup()
            await second.startup()
            await first.shutdown()
            await second.shutdown()
            assert signal.getsignal(signal.SIGTERM) is loops_own
            return weakref.ref(first)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    gone = asyncio.run(main())
    gc.collect()
    assert gone() is None


def test_a_failed_startup_gives_the_sigterm_back() -> None:
    """A startup hook that fails: no shutdown follows, so the startup itself gives the loop
    its SIGTERM handler back (it was left to the app, which held the failed server)."""

    def fail() -> None:
        raise RuntimeError("no database")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        try:
            loops_own = signal.getsignal(signal.SIGTERM)
            with pytest.raises(RuntimeError, match="no database"):
                await AgentRunServer(lambda r: "ok", on_startup=[fail]).startup()
            assert signal.getsignal(signal.SIGTERM) is loops_own
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())


def test_a_sigterm_no_running_loop_handles_is_left_alone() -> None:
    """uvloop keeps its handler on SIGTERM after its loop has closed: the process ignores the
    signal. A server started on another loop took it over, so a SIGTERM put the app into its
    shutdown (503 to every request) while the process, which nothing stops, went on."""
    uvloop = pytest.importorskip("uvloop")
    previous = signal.getsignal(signal.SIGTERM)
    closed = uvloop.new_event_loop()
    closed.add_signal_handler(signal.SIGTERM, lambda: None)
    closed.close()
    try:
        stale = signal.getsignal(signal.SIGTERM)

        async def main() -> None:
            server = AgentRunServer(lambda r: "ok")
            async with Lifespan(server):
                assert signal.getsignal(signal.SIGTERM) is stale

        asyncio.run(main())
        # The same once an app took it from that uvloop, which closed before the app's
        # shutdown: a server started after it is not told.
        first = AgentRunServer(lambda r: "ok")
        closed = uvloop.new_event_loop()
        closed.add_signal_handler(signal.SIGTERM, lambda: None)
        closed.run_until_complete(first.startup())
        closed.close()

        async def after() -> None:
            server = AgentRunServer(lambda r: "ok")
            async with Lifespan(server):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(5):  # the loop turns a told app's shutdown takes
                    await asyncio.sleep(0)
                assert not server.lifecycle.closing

        asyncio.run(after())
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_handled_in_python_is_left_to_its_handler() -> None:
    """uvicorn and gunicorn's workers handle the signal in Python themselves (and
    ``uvicorn_server`` tells the app): the app leaves their handler alone."""
    def handle_exit(signum: int, frame: Any) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, handle_exit)
    try:
        async def main() -> None:
            server = AgentRunServer(lambda r: "ok")
            async with Lifespan(server):
                assert signal.getsignal(signal.SIGTERM) is handle_exit

        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_serving_again_after_a_restart() -> None:
    async def main() -> None:
        server = AgentRunServer(lambda r: "ok")
        async with Lifespan(server):
            pass
        async with Lifespan(server):
            assert (await call(server, "GET", "/health")).status == 200

    asyncio.run(main())


def test_servers_started_one_after_another_are_freed() -> None:
    """Startup freezes the heap (``gc.freeze``) once per process: a server started later (a
    test suite's next one, a restart in a notebook) used to freeze the ones stopped before it,
    still uncollected in their reference cycles, and everything they held, for good."""

    class Held:  # what an agent may hold (a client, a cache), in a reference cycle
        def __init__(self) -> None:
            self.me = self

    def started_and_stopped() -> weakref.ref[Held]:
        held = Held()
        server = AgentRunServer(lambda request, held=held: "ok")
        with run_server(server) as base:
            assert httpx.get(base + "/health").status_code == 200
        return weakref.ref(held)

    started_and_stopped()  # the process's first startup, whichever test runs first
    gone = [started_and_stopped() for _ in range(2)]
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_lifespan_context_manager_and_hooks_in_order() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: AgentRunServer) -> AsyncIterator[dict[str, Any]]:
        log.append("enter")
        yield {"pool": "db"}
        log.append("exit")

    async def main() -> dict[str, Any]:
        server = AgentRunServer(lambda r: "ok", lifespan=lifespan,
                                on_startup=[lambda: log.append("startup")],
                                on_shutdown=[lambda: log.append("shutdown")])  # fmt: skip
        async with Lifespan(server) as driver:
            assert log == ["startup", "enter"]
            assert server.state == {"pool": "db"}
        return driver.scope["state"]  # type: ignore[no-any-return]

    state = asyncio.run(main())
    assert log == ["startup", "enter", "exit", "shutdown"]
    assert state == {"pool": "db"}


def test_failing_lifespan_fails_startup() -> None:
    @asynccontextmanager
    async def lifespan(app: AgentRunServer) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    async def main() -> dict[str, Any]:
        server = AgentRunServer(lambda r: "ok", lifespan=lifespan)
        driver = Lifespan(server)
        driver.task = asyncio.ensure_future(server(driver.scope, driver.inbox.get,
                                                   driver.outbox.put))  # fmt: skip
        await driver.inbox.put({"type": "lifespan.startup"})
        return await driver.outbox.get()

    assert asyncio.run(main()) == {"type": "lifespan.startup.failed", "message": "no database"}


def test_shutdown_waits_for_a_run_within_grace() -> None:
    async def slow(request: AgentRequest) -> str:
        await anyio.sleep(0.3)
        return "finished"

    async def main() -> None:
        server = AgentRunServer(slow, shutdown_grace=5)
        async with Lifespan(server) as lifespan:
            request = asyncio.ensure_future(call(server, "POST", "/v1/chat/completions",
                                                 chat_body()))  # fmt: skip
            await asyncio.sleep(0.05)
            done = await lifespan.shutdown()
            assert request.done()  # the lifespan shutdown waited for it
            r = await request
            assert done["type"] == "lifespan.shutdown.complete"
            assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == "finished"

    asyncio.run(main())


@pytest.mark.parametrize("protocol", ["openai", "agui", "json"])
def test_grace_then_final_frame_in_process(protocol: str) -> None:
    endless = Endless()

    async def main() -> None:
        server = AgentRunServer(endless.agent, shutdown_grace=0.3)
        async with Lifespan(server) as lifespan:
            if protocol == "agui":
                pending = call(server, "POST", "/ag-ui/agent", orjson.dumps(AGUI))
            else:
                pending = call(server, "POST", "/v1/chat/completions",
                               chat_body(stream=protocol == "openai"))  # fmt: skip
            request = asyncio.ensure_future(pending)
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await lifespan.shutdown()
            r = await request
            assert time.monotonic() - started < 2
        if protocol == "json":
            assert r.status == 503
            assert r.json()["error"]["code"] == "server_shutting_down"
            return
        payloads = sse_payloads(r.body)
        assert len(payloads) > 3  # it streamed during the grace period
        last = orjson.loads(payloads[-1])
        if protocol == "agui":
            assert last["type"] == "RUN_ERROR" and last["code"] == "server_shutting_down"
        else:
            assert last["error"]["code"] == "server_shutting_down"
        assert r.complete

    asyncio.run(main())
    assert endless.finalized.is_set()


# -- real uvicorn ------------------------------------------------------------------------------


def test_shutdown_after_a_loop_was_closed_mid_request() -> None:
    """A request left in flight by a loop closed without finishing it (a thread that died, say)
    can never end: it must not make a later shutdown fail (its deadline cannot be set on a
    closed loop), which skipped the shutdown hooks and the ``lifespan`` exit."""
    hooks: list[str] = []
    server = AgentRunServer(Endless().agent, shutdown_grace=1,
                            on_shutdown=[lambda: hooks.append("shutdown")])  # fmt: skip
    abandoned = asyncio.new_event_loop()
    task = abandoned.create_task(call(server, "POST", "/v1/chat/completions", chat_body(True)))
    abandoned.run_until_complete(asyncio.sleep(0.05))  # in flight, streaming
    left = asyncio.all_tasks(abandoned)  # the request's and its disconnect watcher's
    assert task in left
    abandoned.close()  # without finishing it
    assert server.lifecycle.runs

    with run_server(server) as base:
        assert httpx.get(base + "/health").status_code == 200
    assert hooks == ["shutdown"]
    assert not server.lifecycle.runs
    for leftover in left:
        with contextlib.suppress(BaseException):
            leftover.get_coro().close()
        leftover._log_destroy_pending = False  # type: ignore[attr-defined]  # left on purpose


@contextmanager
def running(server: uvicorn.Server) -> Iterator[str]:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive()


def stream_until_shutdown(base: str, uv: uvicorn.Server, path: str, body: Any,
                          endless: Endless) -> tuple[list[str], float]:  # fmt: skip
    """Open a stream, read a few frames, make uvicorn exit; the frames and the time to end."""
    with httpx.stream("POST", base + path, json=body, timeout=15) as r:
        lines = r.iter_lines()
        frames = [next(lines) for _ in range(3)]
        uv.should_exit = True
        started = time.monotonic()
        frames += list(lines)
        elapsed = time.monotonic() - started
    return [line[5:].strip() for line in frames if line.startswith("data:")], elapsed


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {**CHAT, "stream": True}),
                                        ("/ag-ui/agent", AGUI)])  # fmt: skip
def test_uvicorn_shutdown_ends_stream_after_grace(path: str, body: Any) -> None:
    endless = Endless()
    hooks: list[str] = []
    grace = 0.5
    app = AgentRunServer(endless.agent, shutdown_grace=grace,
                         on_shutdown=[lambda: hooks.append("shutdown")])  # fmt: skip
    uv = app.uvicorn_server(host="127.0.0.1", port=0, log_level="warning")
    with running(uv) as base:
        payloads, elapsed = stream_until_shutdown(base, uv, path, body, endless)
        print(f"\n[shutdown] {path}: stream ended {elapsed * 1000:.0f} ms after should_exit "
              f"(grace {grace * 1000:.0f} ms)")
        assert elapsed < grace + 2
        last = orjson.loads(payloads[-1])
        if path == "/ag-ui/agent":
            assert last["type"] == "RUN_ERROR" and last["code"] == "server_shutting_down"
        else:
            assert last["error"]["code"] == "server_shutting_down"
        assert endless.finalized.wait(2)
    assert hooks == ["shutdown"]


def test_uvicorn_shutdown_lets_a_short_stream_finish() -> None:
    endless = Endless(ticks=20)  # about 0.4 s of streaming
    app = AgentRunServer(endless.agent, shutdown_grace=5)
    uv = app.uvicorn_server(host="127.0.0.1", port=0, log_level="warning")
    with running(uv) as base:
        payloads, _ = stream_until_shutdown(base, uv, "/ag-ui/agent", AGUI, endless)
        assert orjson.loads(payloads[-1])["type"] == "RUN_FINISHED"
        with pytest.raises(httpx.TransportError):  # the listener is closed
            httpx.get(base + "/health", timeout=2)


class Records(logging.Handler):
    """The records of one logger, whatever logging config uvicorn applied to it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> list[logging.LogRecord]:
        self.logger.addHandler(self)
        return self.records

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {**CHAT, "stream": True}),
                                        ("/ag-ui/agent", AGUI)])  # fmt: skip
def test_plain_uvicorn_graceful_timeout_still_gets_final_frame(path: str, body: Any) -> None:
    """``uvicorn --timeout-graceful-shutdown``: uvicorn cancels the request; the frame goes out,
    and the response is whole: uvicorn used to log each such stream as an "Exception in ASGI
    application", with the traceback of its cancellation."""
    endless = Endless()
    app = AgentRunServer(endless.agent)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                       timeout_graceful_shutdown=1))  # fmt: skip
    with Records("uvicorn.error") as records, running(uv) as base:
        payloads, elapsed = stream_until_shutdown(base, uv, path, body, endless)
        assert elapsed < 4
        last = orjson.loads(payloads[-1])
        assert (last if path == "/ag-ui/agent" else last["error"])["code"] == "server_shutting_down"
        assert endless.finalized.wait(2)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == [
        "Cancel 1 running task(s), timeout graceful shutdown exceeded"
    ]


def test_plain_uvicorn_graceful_timeout_answers_a_json_run_503() -> None:
    endless = Endless()
    app = AgentRunServer(endless.agent)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                       timeout_graceful_shutdown=1))  # fmt: skip
    with Records("uvicorn.error") as records, running(uv) as base:
        with httpx.Client(timeout=15) as client:
            pending = threading.Thread(target=lambda: answers.append(
                client.post(base + "/v1/chat/completions", json=CHAT)))  # fmt: skip
            answers: list[httpx.Response] = []
            pending.start()
            assert endless.started.wait(5)
            uv.should_exit = True
            pending.join(10)
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "server_shutting_down"
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == [
        "Cancel 1 running task(s), timeout graceful shutdown exceeded"
    ]


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT),
                                        ("/v1/chat/completions", {**CHAT, "stream": True}),
                                        ("/ag-ui/agent", AGUI)])  # fmt: skip
def test_a_host_apps_timeout_around_the_server_still_fires(path: str, body: Any) -> None:
    """Only the ASGI server's own cancellation at its shutdown ends quietly once the response
    is whole. A host app's timeout around the server used to be swallowed with it: no
    ``TimeoutError``, and what the host ran after the app had no bound."""
    endless = Endless()
    server = AgentRunServer(endless.agent)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call(server, "POST", path, orjson.dumps(body)), 0.2)
        assert endless.started.is_set()

    asyncio.run(main())


def test_shutdown_waits_for_a_stopped_sync_generator_to_close_in_its_thread() -> None:
    """A sync generator stopped at the end of the grace period while its ``next()`` runs is
    closed by that step when it returns, in its thread. Shutdown waits for it (within its
    bound): before, the lifespan ended at once, and uvicorn, which re-raises the SIGTERM it
    caught, ended the process before the generator's ``finally`` could run."""
    order: list[str] = []

    def agent(request: AgentRequest) -> Iterator[str]:
        try:
            yield "first "
            # Still running when the grace period ends: returns once the run was stopped and
            # ended (by that, not by a sleep that a loaded machine could outlast).
            deadline = time.monotonic() + 10
            while (app.lifecycle.runs or not app.lifecycle.closing) and time.monotonic() < deadline:
                time.sleep(0.01)
            yield "late"
        finally:
            order.append(f"finally in {threading.current_thread().name}")

    app = AgentRunServer(agent, shutdown_grace=0.2, on_shutdown=[lambda: order.append("hooks")])
    uv = app.uvicorn_server(host="127.0.0.1", port=0, log_level="warning")
    body = {**CHAT, "stream": True}
    with running(uv) as base:
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=10) as r:
            lines = r.iter_lines()
            assert "first" in next(lines)
            uv.should_exit = True
            payloads = [line[5:].strip() for line in lines if line.startswith("data:")]
    assert orjson.loads(payloads[-1])["error"]["code"] == "server_shutting_down"
    assert order == ["finally in AnyIO worker thread", "hooks"]
