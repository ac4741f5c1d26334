"""Agent faults never take the server down or leak internals; every error has its protocol's shape.

Each fault is sent to a real uvicorn; the answer must be a clear error (status + body, or the
protocol's error frame), without a traceback, and the next request must succeed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from rawhttp import sse_payloads

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentRunServer,
    EventType,
    ProtocolHandler,
    Request,
    Route,
)
from agentrun_asgi.types import Send

SECRET = "s3cr3t-internal-detail"
_BLOCKED, _UNBLOCK = threading.Event(), threading.Event()


def _faulty(request: AgentRequest) -> Any:
    mode = request.messages[-1].text

    def gen() -> Iterator[Any]:
        yield "partial "
        if mode == "gen_raise":
            raise ValueError("generator broke")
        if mode == "gen_bad_type":
            yield object()
        if mode == "gen_set":
            yield AgentEvent(EventType.TEXT, {"delta": "x"}, addition={"tags": {1, 2}})
        if mode == "gen_exit":
            sys.exit("generator quit")
        yield "end"

    if mode == "raise":
        raise RuntimeError("agent broke")
    if mode == "exit":
        sys.exit("agent quit")
    if mode == "interrupt":
        raise KeyboardInterrupt("agent interrupted")
    if mode == "stop_iteration":
        raise StopIteration("agent ran out")
    if mode == "bad_return":
        return 42
    if mode == "bad_item":
        return ["ok", object()]
    if mode == "set_args":
        return [AgentEvent(EventType.TOOL_CALL, {"id": "c", "name": "f", "args": {1, 2}})]
    if mode == "set_usage":
        return [AgentEvent(EventType.TEXT, {"delta": "x", "usage": {"tokens": {1}}})]
    if mode == "object_data":
        return [AgentEvent(EventType.CUSTOM, {"name": "n", "value": threading.Lock()})]
    if mode == "block":
        _BLOCKED.set()
        _UNBLOCK.wait(5)  # a sync agent stuck in a call, until the test lets it go
        return "slow but fine"
    if mode.startswith("gen"):
        return gen()
    return "fine"


class Broken(ProtocolHandler):
    """Endpoints that fail the way a buggy custom protocol would."""

    def get_prefix(self) -> str | None:
        return "/broken"

    def routes(self) -> Sequence[Route]:
        return (Route("/before", self.before, ("GET",)), Route("/after", self.after, ("GET",)),
                Route("/done", self.done, ("GET",)))  # fmt: skip

    async def before(self, request: Request, send: Send) -> None:
        raise RuntimeError(SECRET)

    async def done(self, request: Request, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError(SECRET)  # fmt: skip

    async def after(self, request: Request, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError(SECRET)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from conftest import run_server

    from agentrun_asgi import AGUIProtocolHandler, OpenAIProtocolHandler

    server = AgentRunServer(
        _faulty, protocols=[OpenAIProtocolHandler(), AGUIProtocolHandler(), Broken()]
    )
    with run_server(server) as url:
        yield url


def chat(base: str, mode: str, stream: bool = False) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": mode}], "stream": stream}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=10)


def agui(base: str, mode: str) -> list[dict[str, Any]]:
    body = {"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": mode}]}
    r = httpx.post(base + "/ag-ui/agent", json=body, timeout=10)
    assert r.status_code == 200
    assert "Traceback" not in r.text and SECRET not in r.text
    return [orjson.loads(p) for p in sse_payloads(r.content)]


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """OpenAI's error body (PROTOCOLS.md, "Errors"), and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert "Traceback" not in r.text and SECRET not in r.text
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error  # type: ignore[no-any-return]


def assert_still_serving(base: str) -> None:
    r = chat(base, "hello")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"


FAULTS = ["raise", "bad_return", "bad_item", "set_args", "set_usage", "object_data",
          "gen_raise", "gen_bad_type", "gen_set", "exit", "interrupt", "stop_iteration",
          "gen_exit"]  # fmt: skip
# What a protocol never serialises cannot fail it: OpenAI streams send no CUSTOM event and no
# usage unless asked; a chat.completion has no CUSTOM event and no per-delta additions; AG-UI
# picks the known token counts out of usage.
HARMLESS = {
    "stream": {"set_usage", "object_data"},
    "json": {"object_data", "gen_set"},
    "agui": {"set_usage"},
}


@pytest.mark.parametrize("mode", FAULTS)
def test_stream_fault_ends_with_error_frame(base_url: str, mode: str) -> None:
    r = chat(base_url, mode, stream=True)
    assert r.status_code == 200
    assert "Traceback" not in r.text
    payloads = sse_payloads(r.content)
    if mode in HARMLESS["stream"]:
        assert payloads[-1] == "[DONE]"
    else:
        last = orjson.loads(payloads[-1])
        assert set(last) == {"error"}
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["message"]
    assert_still_serving(base_url)


@pytest.mark.parametrize("mode", FAULTS)
def test_non_stream_fault_is_500(base_url: str, mode: str) -> None:
    r = chat(base_url, mode)
    if mode in HARMLESS["json"]:
        assert r.status_code == 200
    else:
        assert_error(r, 500)
    assert_still_serving(base_url)


@pytest.mark.parametrize("mode", FAULTS)
def test_agui_fault_is_run_error(base_url: str, mode: str) -> None:
    events = agui(base_url, mode)
    assert events[0]["type"] == "RUN_STARTED"
    if mode in HARMLESS["agui"]:
        assert events[-1]["type"] == "RUN_FINISHED"
    else:
        assert events[-1]["type"] == "RUN_ERROR"
        assert set(events[-1]) <= {"type", "message", "code", "timestamp", "rawEvent"}
        assert events[-1]["message"]
    assert_still_serving(base_url)


def assert_agent_error_everywhere(base: str, mode: str, message: str) -> None:
    """Every protocol and form ends the run as an agent error with ``message`` (no retry),
    and the server goes on serving."""
    r = chat(base, mode)
    assert assert_error(r, 500)["message"] == message
    assert r.headers["x-should-retry"] == "false"
    last = orjson.loads(sse_payloads(chat(base, mode, stream=True).content)[-1])
    assert last["error"]["message"] == message
    assert agui(base, mode)[-1] == {"type": "RUN_ERROR", "message": message}
    body = {"input": mode}
    r = httpx.post(base + "/v1/responses", json=body, timeout=10)
    assert assert_error(r, 500)["message"] == message
    r = httpx.post(base + "/v1/responses", json={**body, "stream": True}, timeout=10)
    failed = orjson.loads(sse_payloads(r.content)[-1])
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["message"] == message
    assert_still_serving(base)


@pytest.mark.parametrize(
    "mode, message",
    [("exit", "the agent raised SystemExit: agent quit"),
     ("interrupt", "the agent raised KeyboardInterrupt: agent interrupted"),
     ("stop_iteration", "the agent raised StopIteration: agent ran out"),
     ("gen_exit", "the agent raised SystemExit: generator quit")],
)  # fmt: skip
def test_exits_raised_in_the_agents_thread_are_agent_errors(
    serve: Any, mode: str, message: str
) -> None:
    """``sys.exit()``, ``KeyboardInterrupt`` or ``StopIteration`` raised by a sync agent in its
    worker thread end its run like any exception, on every protocol. Before, the first two
    reached the event loop as themselves: a non-stream run got a 503 "shutting down" (which
    the OpenAI clients retry, running the agent again), a stream was cut without its error
    frame; a ``StopIteration`` said "coroutine raised StopIteration"."""
    with serve(AgentRunServer(_faulty)) as base:
        assert_agent_error_everywhere(base, mode, message)


async def _cancelled() -> None:
    """What awaiting a task that something else cancelled raises, in the agent's own task."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def _async_faulty(request: AgentRequest) -> AsyncIterator[str]:
    if request.messages[-1].text == "hello":
        yield "fine"
        return
    yield "partial "
    await _cancelled()


async def _async_function_faulty(request: AgentRequest) -> str:
    if request.messages[-1].text == "hello":
        return "fine"
    await _cancelled()
    return "never"


_OWN_CANCEL = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() tells a stop from the agent's own"
)


@_OWN_CANCEL
@pytest.mark.parametrize("agent", [_async_function_faulty, _async_faulty])
def test_own_cancellations_of_async_agents_are_agent_errors(serve: Any, agent: Any) -> None:
    """A ``CancelledError`` that nobody sent the run (the agent awaited something cancelled
    elsewhere) used to pass for a shutdown: a non-stream run got a 503 "shutting down" (retried
    by the OpenAI clients, running the agent again), a stream was cut without its error frame
    or told "server_shutting_down"."""
    mode, message = "cancelled", "the agent raised CancelledError"
    with serve(AgentRunServer(agent)) as base:
        assert_agent_error_everywhere(base, mode, message)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.11+ tells them apart (above)")
@pytest.mark.parametrize("agent", [_async_function_faulty, _async_faulty])
def test_own_cancellations_before_python_311_are_answered_as_stops(serve: Any, agent: Any) -> None:
    """Python 3.10 has no ``Task.cancelling()``: an agent's own ``CancelledError`` cannot be
    told from a stop (README, "Faults"), and is answered as one, whole: a 503 "shutting down",
    a stream's error frame; the server goes on serving."""
    with serve(AgentRunServer(agent)) as base:
        assert assert_error(chat(base, "cancelled"), 503)["code"] == "server_shutting_down"
        last = orjson.loads(sse_payloads(chat(base, "cancelled", stream=True).content)[-1])
        assert last["error"]["code"] == "server_shutting_down"
        assert agui(base, "cancelled")[-1]["code"] == "server_shutting_down"
        assert_still_serving(base)


def test_unserialisable_event_message_is_clear(base_url: str) -> None:
    events = agui(base_url, "object_data")
    assert "cannot be sent" in events[-1]["message"]


def test_blocking_agent_does_not_block_others(base_url: str) -> None:
    results: list[httpx.Response] = []
    blocker = threading.Thread(target=lambda: results.append(chat(base_url, "block")))
    _BLOCKED.clear()
    _UNBLOCK.clear()
    blocker.start()
    try:
        assert _BLOCKED.wait(5)  # the agent's thread is stuck now
        for _ in range(5):
            assert_still_serving(base_url)
        assert blocker.is_alive() and not results  # served while the agent's thread is stuck
    finally:
        _UNBLOCK.set()
    blocker.join(5)
    assert results[0].json()["choices"][0]["message"]["content"] == "slow but fine"


def test_endpoint_exception_before_response_is_generic_500(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = httpx.get(base_url + "/broken/before")
    error = assert_error(r, 500)
    assert error["code"] == "internal_error"
    assert_still_serving(base_url)


def test_endpoint_exception_after_response_started(base_url: str) -> None:
    """The connection is dropped: the client must not take the half body for a whole one (as
    an ended chunked body would be taken), and nothing of the error leaks into it."""
    received = []
    with httpx.stream("GET", base_url + "/broken/after") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            for chunk in r.iter_raw():
                received.append(chunk)
    assert b"".join(received) == b"half"
    assert_still_serving(base_url)


def test_traceback_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from asgi_driver import call

    server = AgentRunServer(_faulty)
    body = orjson.dumps({"messages": [{"role": "user", "content": "raise"}]})
    with caplog.at_level(logging.ERROR, logger="agentrun_asgi"):
        r = asyncio.run(call(server, "POST", "/v1/chat/completions", body))
    assert r.status == 500 and b"Traceback" not in r.body
    assert any(rec.exc_info and "agent broke" in str(rec.exc_info[1]) for rec in caplog.records)


# -- the documented error shape, one test per protocol ----------------------------------------


def test_openai_error_shape_everywhere(serve: Any) -> None:
    async def slow(request: AgentRequest) -> AsyncIterator[str]:
        import anyio

        if request.messages[-1].text == "slow":
            await anyio.sleep(5)
        if request.messages[-1].text == "raise":
            raise RuntimeError("nope")
        yield "ok"

    server = AgentRunServer(slow, api_keys=["k"], max_body_size=100, request_timeout=0.3)
    auth = {"Authorization": "Bearer k"}
    with serve(server) as base:
        def post(body: Any, **kw: Any) -> httpx.Response:
            return httpx.post(base + "/v1/chat/completions", json=body, headers=auth, **kw)

        msg = {"messages": [{"role": "user", "content": "slow"}]}
        assert_error(httpx.post(base + "/v1/chat/completions", json=msg), 401)
        assert_error(post({"messages": []}), 400)
        assert_error(post({"messages": [{"role": "user", "content": "x" * 200}]}), 413)
        assert_error(httpx.get(base + "/nope", headers=auth), 404)
        assert_error(httpx.delete(base + "/v1/models", headers=auth), 405)
        assert_error(post(msg), 504)
        assert_error(post({"messages": [{"role": "user", "content": "raise"}]}), 500)
        # After a stream has started: one error frame, the same error object.
        r = post({**msg, "stream": True})
        frame = orjson.loads(sse_payloads(r.content)[-1])
        assert set(frame) == {"error"} and set(frame["error"]) == {"message", "type", "param",
                                                                   "code"}  # fmt: skip


def test_agui_error_shape_everywhere(serve: Any) -> None:
    async def slow(request: AgentRequest) -> AsyncIterator[str]:
        import anyio

        if request.messages[-1].text == "slow":
            await anyio.sleep(5)
        yield "ok"

    server = AgentRunServer(slow, api_keys=["k"], max_body_size=200, request_timeout=0.3)
    auth = {"Authorization": "Bearer k"}
    url = "/ag-ui/agent"
    with serve(server) as base:
        def post(body: Any, headers: dict[str, str] = auth) -> httpx.Response:
            return httpx.post(base + url, json=body, headers=headers, timeout=10)

        run = {"threadId": "t", "runId": "r"}
        # Before the stream: JSON errors, the same shape as OpenAI's.
        assert_error(post({**run, "messages": []}, headers={}), 401)
        assert_error(httpx.post(base + url, content=b"{", headers=auth), 400)
        assert_error(post({**run, "messages": "nope"}), 400)
        assert_error(post({**run, "messages": [], "state": "x" * 300}), 413)
        assert_error(httpx.get(base + url, headers=auth), 405)
        # After RUN_STARTED: RUN_ERROR {message, code?}, the run's last event.
        r = post({**run, "messages": [{"role": "user", "content": "slow"}]})
        events = [orjson.loads(p) for p in sse_payloads(r.content)]
        assert events[0]["type"] == "RUN_STARTED"
        last = events[-1]
        assert last["type"] == "RUN_ERROR" and last["code"] == "timeout"
        assert isinstance(last["message"], str) and last["message"]


def test_agent_cleanup_failing_after_a_whole_stream_does_not_drop_it(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent ended by its own ERROR event whose ``finally`` then raises: the stream went out
    whole, so the failure is logged, not raised to the ASGI server as an aborted response (which
    uvicorn logs again as "Exception in ASGI application" and answers by closing the
    connection)."""
    import time

    from rawhttp import connect, read_until, request_head, send_json

    async def agent(request: AgentRequest) -> AsyncIterator[Any]:
        try:
            yield "hi"
            yield AgentEvent(event=EventType.ERROR, data={"message": "bad"})
        finally:
            raise RuntimeError("cleanup broke")

    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    with serve(AgentRunServer(agent)) as base:
        sock = connect(base)
        with sock, caplog.at_level(logging.ERROR, logger="agentrun_asgi"):
            send_json(sock, "/v1/chat/completions", body)
            first = read_until(sock, b"\r\n0\r\n\r\n")
            deadline = time.monotonic() + 5
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.01)  # the agent is closed after the last frame went out
            sock.sendall(request_head("GET", "/health"))  # the same kept-alive connection
            second = read_until(sock, b"\r\n\r\n")
    assert b'"message":"bad"' in first
    assert second.startswith(b"HTTP/1.1 200 ")
    assert any(r.exc_info and "cleanup broke" in str(r.exc_info[1]) for r in caplog.records)


def test_endpoint_exception_after_its_whole_response_keeps_the_connection(base_url: str) -> None:
    """A response that went out whole before its endpoint raised is not aborted: the client
    has it all, and the kept-alive connection serves the next request."""
    with httpx.Client(base_url=base_url) as http:
        first = http.get("/broken/done")
        second = http.get("/health")
    assert first.status_code == 200 and first.text == "done"
    assert second.status_code == 200
    assert first.extensions["network_stream"] is second.extensions["network_stream"]
