"""Limits: the body size cap (413 before the body is read, memory bounded) and request timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from asgi_driver import call
from rawhttp import connect, read_to_close, request_head, split_response, sse_payloads

from agentrun_asgi import AgentRequest, AgentRunServer

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
JSON_HEADERS = [(b"content-type", b"application/json")]
LIMIT = 1024 * 1024


def ok_agent(request: AgentRequest) -> str:
    return "ok"


def assert_error_body(body: bytes, status: int, code: str) -> dict[str, Any]:
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error  # type: ignore[no-any-return]


# -- body size ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_a_large_body_is_parsed_without_garbage_collections(serve: Any, path: str) -> None:
    """8 MiB of small arrays (within the default limit) is a million containers: parsed with
    the cyclic GC running, it started thousands of collections on the event loop's thread,
    full ones among them, and held every other client for seconds."""
    import gc

    item = b'{"a":[]}'
    junk = b"[" + b",".join([item] * (8 * LIMIT // (len(item) + 1))) + b"]"
    body = orjson.dumps(CHAT)[:-1] + b',"junk":' + junk + b"}"
    if path == "/v1/responses":
        body = b'{"input":"hi","junk":' + junk + b"}"
    collections: list[str] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(threading.current_thread().name)

    with serve(AgentRunServer(ok_agent)) as base:
        gc.callbacks.append(on_gc)
        try:
            response = httpx.post(base + path, content=body, headers={
                "content-type": "application/json"}, timeout=60)  # fmt: skip
        finally:
            gc.callbacks.remove(on_gc)
    assert response.status_code == 200, response.text
    # The server's thread (see conftest.run_server); a few from the rest of the request.
    assert collections.count("uvicorn-test") < 20, collections.count("uvicorn-test")



def test_declared_length_over_limit_refused_unread() -> None:
    server = AgentRunServer(ok_agent, max_body_size=LIMIT)
    headers = [*JSON_HEADERS, (b"content-length", str(LIMIT + 1).encode())]
    r = asyncio.run(call(server, "POST", "/v1/chat/completions", b"x" * (LIMIT + 1), headers))
    assert r.status == 413
    assert r.chunks_read == 0  # answered from the header alone
    assert r.header("connection") == "close"
    assert_error_body(r.body, 413, "request_too_large")


def test_chunked_body_stops_at_limit_with_bounded_memory() -> None:
    """A 256 MiB chunked upload against a 1 MiB cap: read up to the cap, then 413."""
    server = AgentRunServer(ok_agent, max_body_size=LIMIT)
    size = 65536
    # 256 MiB in all, each chunk a new object, made only when the server asks for it.
    chunks = (b"x" * size for _ in range(4096))
    tracemalloc.start()
    try:
        r = asyncio.run(call(server, "POST", "/v1/chat/completions", chunks, JSON_HEADERS))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status == 413
    assert r.chunks_read <= LIMIT // size + 1
    print(f"\n[limits] chunks read {r.chunks_read} of 4096, peak {peak / 1e6:.1f} MB")
    assert peak < 4 * LIMIT


def test_first_piece_over_limit_refused_without_waiting_for_more() -> None:
    """A body whose first piece is already past the limit is refused on that piece: the 413
    must not wait for a next piece that a client may never send."""
    server = AgentRunServer(ok_agent, max_body_size=1000)
    r = asyncio.run(call(server, "POST", "/v1/chat/completions", [b"x" * 3000, b"{}"],
                         JSON_HEADERS))  # fmt: skip
    assert r.status == 413
    assert_error_body(r.body, 413, "request_too_large")
    assert r.chunks_read == 1


def test_chunked_upload_over_real_socket_answered_early(serve: Any) -> None:
    """uvicorn: the 413 comes while the client is still uploading; the server closes."""
    sent = 0
    total = 256 * 1024 * 1024
    with serve(AgentRunServer(ok_agent, max_body_size=LIMIT)) as base:
        sock = connect(base)
        sock.sendall(request_head("POST", "/v1/chat/completions",
                                  {"Content-Type": "application/json",
                                   "Transfer-Encoding": "chunked"}))  # fmt: skip
        piece = b"x" * 65536
        frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
        stop = threading.Event()

        def upload() -> None:
            nonlocal sent
            try:
                while sent < total and not stop.is_set():
                    sock.sendall(frame)
                    sent += len(piece)
            except OSError:
                pass  # the server closed the connection: expected

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        raw = read_to_close(sock, deadline_s=20)
        stop.set()
        uploader.join(10)
        sock.close()
        status, _, body = split_response(raw)
        print(f"\n[limits] uploaded {sent / 1e6:.1f} MB of {total / 1e6:.0f} MB before the close")
        assert status == 413
        assert_error_body(body, 413, "request_too_large")
        assert sent < total // 4
        assert httpx.get(base + "/health").status_code == 200


# -- timeouts ----------------------------------------------------------------------------------


class Slow:
    def __init__(self) -> None:
        self.finalized = threading.Event()

    async def agent(self, request: AgentRequest) -> AsyncIterator[str]:
        try:
            yield "first "
            await anyio.sleep(30)
            yield "never"
        finally:
            self.finalized.set()


def test_stream_timeout_ends_with_error_frame(serve: Any) -> None:
    slow = Slow()
    with serve(AgentRunServer(slow.agent, request_timeout=0.3)) as base:
        started = time.monotonic()
        r = httpx.post(base + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10)
        elapsed = time.monotonic() - started
        assert r.status_code == 200
        payloads = sse_payloads(r.content)
        assert "first" in payloads[0]
        error = orjson.loads(payloads[-1])["error"]
        assert error["code"] == "timeout" and "0.3 s" in error["message"]
        assert slow.finalized.wait(2)
        assert elapsed < 5


def test_agui_timeout_ends_with_run_error(serve: Any) -> None:
    slow = Slow()
    with serve(AgentRunServer(slow.agent, request_timeout=0.3)) as base:
        body = {"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(base + "/ag-ui/agent", json=body, timeout=10)
        events = [orjson.loads(p) for p in sse_payloads(r.content)]
        assert events[0]["type"] == "RUN_STARTED"
        assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "timeout"
        assert slow.finalized.wait(2)


def test_non_stream_timeout_is_504(serve: Any) -> None:
    slow = Slow()
    with serve(AgentRunServer(slow.agent, request_timeout=0.3)) as base:
        r = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 504
        assert_error_body(r.content, 504, "timeout")
        # A retry would wait out the same deadline again: the OpenAI clients are told not to.
        assert r.headers["x-should-retry"] == "false"
        assert slow.finalized.wait(2)


@pytest.mark.parametrize("shape", ["function", "generator", "raises"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_non_stream_timeout_is_504_even_if_the_agent_swallows_it(
    serve: Any, path: str, shape: str
) -> None:
    """Agent code that takes the ``CancelledError`` (a bare ``except``, a retrying library) and
    returns, or raises an error of its own instead: its late answer must not go out as a 200
    after the deadline, nor its error as the 500 of an agent failure."""
    finished = threading.Event()

    async def swallow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass

    async def function(request: AgentRequest) -> str:
        await swallow()
        finished.set()
        return "late"

    async def generator(request: AgentRequest) -> AsyncIterator[str]:
        yield "early "
        await swallow()
        finished.set()
        yield "late"

    async def raises(request: AgentRequest) -> str:
        try:
            await asyncio.sleep(5)
        finally:
            finished.set()
            raise RuntimeError("cleanup failed")

    agent = {"function": function, "generator": generator, "raises": raises}[shape]
    body = CHAT if path.endswith("completions") else {"input": "hi"}
    with serve(AgentRunServer(agent, request_timeout=0.3)) as base:
        r = httpx.post(base + path, json=body, timeout=10)
        assert finished.wait(5)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_body_that_never_arrives_is_408_not_504(serve: Any, http: str, path: str) -> None:
    """A client that declares a body and stops sending it made the deadline answer 504 "the
    agent did not finish" (a server error) although the agent never started: it is the
    client's delay, 408, and the connection closes (the rest of the body may still come)."""
    calls: list[AgentRequest] = []
    with serve(AgentRunServer(calls.append, request_timeout=0.3), http=http) as base:
        sock = connect(base)
        sock.sendall(request_head("POST", path, {"Content-Type": "application/json"}, 100)
                     + b'{"messages"')  # fmt: skip
        status, headers, body = split_response(read_to_close(sock))
        sock.close()
    assert status == 408
    assert headers["connection"] == "close" and headers["x-request-id"]
    assert "request timeout of 0.3 s" in assert_error_body(body, 408, "request_timeout")["message"]
    assert calls == []


def test_timeout_does_not_wait_for_a_blocked_thread(serve: Any) -> None:
    """A sync agent stuck in its thread: 504 at the deadline; other requests are served."""
    release = threading.Event()

    def blocking(request: AgentRequest) -> str:
        if request.messages[-1].text == "block":
            release.wait(10)
        return "ok"

    with serve(AgentRunServer(blocking, request_timeout=0.3)) as base:
        try:
            started = time.monotonic()
            r = httpx.post(base + "/v1/chat/completions",
                           json={"messages": [{"role": "user", "content": "block"}]},
                           timeout=10)  # fmt: skip
            assert r.status_code == 504
            assert time.monotonic() - started < 5
            follow = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=10)
            assert follow.status_code == 200
        finally:
            release.set()


def test_fast_runs_unaffected_by_timeout() -> None:
    server = AgentRunServer(ok_agent, request_timeout=5)
    r = asyncio.run(call(server, "POST", "/v1/chat/completions", orjson.dumps(CHAT), JSON_HEADERS))
    assert r.status == 200
    assert r.json()["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize("bad", [0, -1.0])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        AgentRunServer(ok_agent, request_timeout=bad)


# -- worker threads ----------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [None, 60])
def test_sync_agents_share_anyio_threads_and_the_cap_can_be_raised(
    serve: Any, tokens: int | None
) -> None:
    """Sync agents run on anyio's worker threads, 40 at once by default (README, "Write an
    agent"); the README's startup hook raises the cap for agents that wait on slow calls."""
    import anyio.to_thread

    barrier = threading.Barrier(50, timeout=3)  # passes only with 50 agents running at once

    def waiting(request: AgentRequest) -> str:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return "alone"
        return "together"

    async def more_threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = tokens or 40

    server = AgentRunServer(waiting, on_startup=[more_threads])
    with serve(server) as base:

        async def main() -> list[str]:
            async with httpx.AsyncClient(base_url=base, timeout=20) as client:

                async def one() -> str:
                    r = await client.post("/v1/chat/completions", json=CHAT)
                    return str(r.json()["choices"][0]["message"]["content"])

                return list(await asyncio.gather(*(one() for _ in range(50))))

        results = asyncio.run(main())
    assert len(results) == 50
    if tokens is None:
        assert "alone" in results  # 40 threads: the 50 never ran at once
    else:
        assert set(results) == {"together"}
