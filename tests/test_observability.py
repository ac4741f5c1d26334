"""Observability against a real uvicorn: the access log, Prometheus metrics, middleware hooks."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import openai
import pytest
import rawhttp

from agentrun_asgi import AgentRequest, AgentRunServer
from agentrun_asgi.middleware.access_log import AccessLogMiddleware
from agentrun_asgi.types import ASGIApp, ASGIMessage, Receive, Scope, Send

USER = [{"role": "user", "content": "hi"}]
KEY = "sk-test"


def said(request: AgentRequest) -> str:
    last = request.last_user_message
    return last.text if last is not None else ""


async def agent(request: AgentRequest) -> AsyncIterator[str]:
    """Echoes in three pieces; ``fail`` raises at once, ``fail later`` after some text."""
    text = said(request)
    if text == "fail":
        raise RuntimeError("agent exploded")
    for piece in ("one ", "two ", "three"):
        yield piece
    if text == "fail later":
        raise RuntimeError("agent exploded mid-stream")


def chat(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=10)


def sse_frames(body: bytes) -> list[bytes]:
    return [frame for frame in body.split(b"\n\n") if frame.strip()]


def eventually(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """``check()`` once it is truthy. The server logs and counts a request right after its
    last byte went out, so the client may get there first; the bound only catches hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def layers(server: AgentRunServer) -> list[type]:
    kinds = []
    app: Any = server._http
    while hasattr(app, "app"):
        kinds.append(type(app))
        app = app.app
    return kinds


# -- access log ------------------------------------------------------------------------------


@pytest.fixture
def access_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="agentrun_asgi.access")
    return caplog


def access(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The access lines so far, once there are ``count`` of them."""

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "agentrun_asgi.access"]

    assert eventually(lambda: len(lines()) >= count), "no access log line"
    return lines()


def test_access_log_is_off_by_default() -> None:
    server = AgentRunServer(agent)
    assert AccessLogMiddleware not in layers(server)
    assert server.metrics is None
    assert all(route.name != "metrics" for route in server.routes)


def test_access_log_json_request(serve: Any, access_records: pytest.LogCaptureFixture) -> None:
    with serve(AgentRunServer(agent, access_log=True)) as base:
        response = httpx.post(
            base + "/v1/chat/completions", json={"model": "m", "messages": USER}, timeout=10
        )
        assert response.status_code == 200
        (record,) = access(access_records, 1)
    assert record.levelno == logging.INFO
    fields: Any = record
    assert fields.method == "POST"
    assert fields.path == "/v1/chat/completions"
    assert fields.status == 200
    assert fields.bytes_sent == len(response.content)
    assert fields.frames is None
    assert fields.request_id == response.headers["x-request-id"]
    host, port = fields.client.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert 0 <= fields.duration_ms < 5000
    message = record.getMessage()
    assert message.startswith("method=POST path=/v1/chat/completions status=200 duration_ms=")
    assert f"bytes_sent={len(response.content)} frames=- " in message
    assert f"request_id={fields.request_id} client={fields.client}" in message
    # The id is a field of its own, not a "[id]" prefix of the message.
    assert not message.startswith("[")


def test_access_log_stream_counts_frames(
    serve: Any, access_records: pytest.LogCaptureFixture
) -> None:
    with serve(AgentRunServer(agent, access_log=True)) as base:
        body = {"model": "m", "messages": USER, "stream": True}
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=10) as resp:
            raw = resp.read()
        (record,) = access(access_records, 1)
    frames = sse_frames(raw)
    assert frames[-1] == b"data: [DONE]"
    fields: Any = record
    assert fields.status == 200
    assert fields.frames == len(frames)
    assert fields.bytes_sent == len(raw)
    assert f"frames={len(frames)} " in record.getMessage()


def test_access_log_errors_and_odd_paths(
    serve: Any, access_records: pytest.LogCaptureFixture
) -> None:
    server = AgentRunServer(agent, access_log=True, api_keys=[KEY], request_id=False)
    with serve(server) as base:
        assert httpx.get(base + "/nowhere%0Aforged=1?secret=x", timeout=10).status_code == 401
        headers = {"authorization": f"Bearer {KEY}"}
        assert httpx.get(base + "/nowhere", headers=headers, timeout=10).status_code == 404
        records = access(access_records, 2)
    refused, missing = records
    fields: Any = refused
    assert fields.status == 401
    # Percent-encoded as sent: a path cannot start a forged line; the query is not logged.
    assert fields.path == "/nowhere%0Aforged=1"
    assert "\n" not in refused.getMessage() and "secret" not in refused.getMessage()
    assert fields.request_id == "-"
    assert (missing.status, missing.path) == (404, "/nowhere")  # type: ignore[attr-defined]


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_access_log_client_from_a_forged_forwarded_header(
    serve: Any, access_records: pytest.LogCaptureFixture, http: str
) -> None:
    """Behind ``--proxy-headers`` (uvicorn's default for a peer on 127.0.0.1) the client's host
    is whatever ``X-Forwarded-For`` says: it must not add fields to the line, nor reach a
    terminal as an escape sequence (h11 lets ESC through in a header value)."""
    forged = "6.6.6.6 status=200 request_id=forged" + ("\x1b[2J" if http == "h11" else "")
    with serve(AgentRunServer(agent, access_log=True), http=http) as base:
        sock = rawhttp.connect(base)
        try:
            sock.sendall(rawhttp.request_head("GET", "/health", {"X-Forwarded-For": forged}))
            assert rawhttp.read_until(sock, b'{"status":"ok"}').startswith(b"HTTP/1.1 200")
        finally:
            sock.close()
        (record,) = access(access_records, 1)
    fields: Any = record
    message = record.getMessage()
    assert message.count("status=") == 1 and message.count("request_id=") == 1
    assert "\x1b" not in message and " " not in fields.client
    assert fields.client.startswith("6.6.6.6%20status%3D200%20request_id%3Dforged")


# -- metrics ---------------------------------------------------------------------------------


Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(base: str, key: str | None = KEY) -> dict[Sample, float]:
    """Every sample of ``/metrics`` by name and sorted labels, parsed by prometheus-client."""
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(base + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(name: str, **labels: str) -> Sample:
    return (name, tuple(sorted(labels.items())))


ROUTE = "openai.chat_completions"


def test_metrics(serve: Any) -> None:
    pytest.importorskip("prometheus_client")
    server = AgentRunServer(agent, metrics=True, api_keys=[KEY])
    with serve(server) as base:
        chat_client = chat(base)
        completion = chat_client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "one two three"
        headers = {"authorization": f"Bearer {KEY}"}
        stream_frames = 0
        for text in ("hi", "fail later"):
            body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
            url = base + "/v1/chat/completions"
            with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as resp:
                frames = sse_frames(resp.read())
            stream_frames += len(frames)
        assert frames[-1].startswith(b'data: {"error"')  # the mid-stream failure's frame
        with pytest.raises(openai.InternalServerError):
            chat_client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "fail"}]
            )
        assert httpx.get(base + "/nowhere", headers=headers, timeout=10).status_code == 404
        assert httpx.get(base + "/metrics", timeout=10).status_code == 401  # behind the key

        expected = {
            sample("agentrun_requests_total", route=ROUTE, method="POST", status="200"): 3,
            sample("agentrun_requests_total", route=ROUTE, method="POST", status="500"): 1,
            sample("agentrun_requests_total", route="unmatched", method="GET", status="404"): 1,
            sample("agentrun_requests_total", route="metrics", method="GET", status="401"): 1,
            sample("agentrun_request_duration_seconds_count", route=ROUTE, method="POST"): 4,
            sample("agentrun_stream_frames_total", route=ROUTE): stream_frames,
            sample("agentrun_agent_errors_total", route=ROUTE): 2,
            sample("agentrun_streams_in_flight", route=ROUTE): 0,
        }

        def settled() -> dict[Any, float] | None:
            samples = scrape(base)
            return samples if all(samples.get(k) == v for k, v in expected.items()) else None

        samples = eventually(settled) or scrape(base)
    assert {k: samples.get(k) for k in expected} == expected
    # Successful requests fail nothing: no error series for the other routes.
    assert sample("agentrun_agent_errors_total", route="unmatched") not in samples
    assert samples[sample("process_resident_memory_bytes")] > 0


def test_metrics_stream_in_flight(serve: Any) -> None:
    pytest.importorskip("prometheus_client")
    release = threading.Event()

    async def slow(request: AgentRequest) -> AsyncIterator[str]:
        yield "first"
        for _ in range(500):  # bounded: 5 s at most
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        yield "last"

    server = AgentRunServer(slow, metrics=True, metrics_public=True, api_keys=[KEY])
    in_flight = sample("agentrun_streams_in_flight", route=ROUTE)
    with serve(server) as base:
        stream = chat(base).chat.completions.create(model="m", messages=USER, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content in ("", "first", None)
        during = scrape(base, key=None)[in_flight]  # metrics_public: no key needed
        release.set()
        rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert rest.endswith("last")
        after = eventually(lambda: scrape(base, key=None)[in_flight] == 0)
    assert during == 1
    assert after


def test_metrics_registry_per_server() -> None:
    pytest.importorskip("prometheus_client")
    one = AgentRunServer(agent, metrics=True)
    two = AgentRunServer(agent, metrics=True, metrics_path=None)
    assert one.metrics is not None and two.metrics is not None
    assert one.metrics.registry is not two.metrics.registry
    assert any(route.name == "metrics" for route in one.routes)
    assert all(route.name != "metrics" for route in two.routes)


def test_metrics_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install 'agentrun-asgi\[metrics\]'"):
        AgentRunServer(agent, metrics=True)
    AgentRunServer(agent)  # metrics off: prometheus-client is never imported


# -- middleware hooks ------------------------------------------------------------------------


def recorder(name: str, log: list[tuple[str, str, Any]]) -> Callable[[ASGIApp], ASGIApp]:
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            log.append((name, "enter", scope["path"]))

            async def recording_send(message: ASGIMessage) -> None:
                if message["type"] == "http.response.start":
                    names = [k for k, _ in message.get("headers", ())]
                    log.append((name, "start", (message["status"], b"x-request-id" in names)))
                await send(message)

            try:
                await app(scope, receive, recording_send)
            finally:
                log.append((name, "exit", scope["path"]))

        return middleware

    return factory


def test_middleware_hooks_wrap_every_request_outermost(serve: Any) -> None:
    log: list[tuple[str, str, Any]] = []
    server = AgentRunServer(
        agent, api_keys=[KEY], middleware=[recorder("outer", log), recorder("inner", log)]
    )
    with serve(server) as base:
        completion = chat(base).chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "one two three"
        assert eventually(lambda: len(log) == 6)
        del log[:]
        # Outside the API key check: a refused request goes through them too.
        assert httpx.get(base + "/v1/models", timeout=10).status_code == 401
        assert eventually(lambda: len(log) == 6)
    path = "/v1/models"
    assert log == [
        ("outer", "enter", path),
        ("inner", "enter", path),
        # Outside the request id layer: they see the header it adds.
        ("inner", "start", (401, True)),
        ("outer", "start", (401, True)),
        ("inner", "exit", path),
        ("outer", "exit", path),
    ]


def test_opentelemetry_asgi_middleware(serve: Any) -> None:
    otel_asgi = pytest.importorskip("opentelemetry.instrumentation.asgi")
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[int] = []

    async def traced(request: AgentRequest) -> AsyncIterator[str]:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        yield "traced"

    middleware = partial(otel_asgi.OpenTelemetryMiddleware, tracer_provider=provider)
    with serve(AgentRunServer(traced, middleware=[middleware])) as base:
        stream = chat(base).chat.completions.create(model="m", messages=USER, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "traced"

        def server_spans() -> list[Any]:
            spans = exporter.get_finished_spans()
            return [s for s in spans if s.kind == trace.SpanKind.SERVER]

        spans = eventually(server_spans)
    (span,) = spans
    status = span.attributes.get("http.response.status_code", span.attributes.get(
        "http.status_code"))  # fmt: skip
    assert status == 200
    # The agent runs inside the request's span: its own spans would join the trace.
    assert seen == [span.context.trace_id]


def test_client_gone_before_the_response_is_not_a_500(
    serve: Any, access_records: pytest.LogCaptureFixture
) -> None:
    """A client that leaves before any response (a timed-out or stopped JSON request) got no
    answer at all: logged and counted as 499 (nginx's "client closed request"), not as a 500
    that would set off the error-rate alerts of a server that did nothing wrong."""
    pytest.importorskip("prometheus_client")
    from rawhttp import connect, send_json

    async def slow(request: AgentRequest) -> str:
        await asyncio.sleep(5)
        return "late"

    server = AgentRunServer(slow, access_log=True, metrics=True, metrics_public=True)
    with serve(server) as base:
        sock = connect(base)
        send_json(sock, "/v1/chat/completions", {"messages": USER})
        time.sleep(0.2)  # the run is under way
        sock.close()
        (record,) = access(access_records, 1)
        gone = sample("agentrun_requests_total", route=ROUTE, method="POST", status="499")
        samples = eventually(lambda: (s := scrape(base, key=None)).get(gone) and s)
    assert record.status == 499  # type: ignore[attr-defined]
    assert "status=499 " in record.getMessage()
    assert samples[gone] == 1
    assert not any(name == "agentrun_requests_total" and ("status", "500") in labels
                   for name, labels in samples)  # fmt: skip


def test_access_log_under_a_bare_uvicorn() -> None:
    """``uvicorn module:server`` configures uvicorn's loggers only: the access lines, INFO on a
    logger nobody set up, were dropped without a word (as the route list was, before it went
    through uvicorn's logger)."""
    from apps.process import free_port, server_process

    port = free_port()
    args = ["-m", "uvicorn", "tests.apps.agent_app:logged", "--port", str(port)]
    with server_process(args, port) as proc:
        body = {"model": "m", "messages": USER, "stream": True}
        with httpx.stream("POST", proc.base_url + "/v1/chat/completions", json=body,
                          headers={"x-request-id": "bare-1"}, timeout=10) as resp:  # fmt: skip
            resp.read()
        line = "method=POST path=/v1/chat/completions status=200 "
        eventually(lambda: line in proc.output())
        output = proc.output()
    assert line in output, output
    (logged,) = [text for text in output.splitlines() if line in text]
    assert "request_id=bare-1 " in logged
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in output  # uvicorn's own line stays


def test_metrics_name_the_route_that_took_a_method_the_first_match_lacks(serve: Any) -> None:
    """``GET /items/special`` beside a ``POST /items/special`` is answered by ``GET
    /items/{id}``: it is counted under that route, not as ``unmatched`` (a 404's label)."""
    pytest.importorskip("prometheus_client")
    from agentrun_asgi import ProtocolHandler, Request, Route
    from agentrun_asgi.responses import send_json

    class Items(ProtocolHandler):
        def routes(self) -> list[Route]:
            return [Route("/special", self.special, ("POST",), "special"),
                    Route("/{id}", self.item, ("GET",), "item")]  # fmt: skip

        async def special(self, request: Request, send: Send) -> None:
            await send_json(send, 200, {})

        async def item(self, request: Request, send: Send) -> None:
            await send_json(send, 200, {})

    server = AgentRunServer(agent, protocols=[Items()], metrics=True, metrics_public=True)
    with serve(server) as base:
        assert httpx.get(base + "/items/special").status_code == 200
        counted = sample("agentrun_requests_total", route="item", method="GET", status="200")
        samples = eventually(lambda: (s := scrape(base, key=None)).get(counted) and s)
    assert samples and samples[counted] == 1


def test_the_status_logged_is_the_one_that_went_out(
    serve: Any, access_records: pytest.LogCaptureFixture
) -> None:
    """An endpoint that started its own 200 and then raised: the guard's 500 head is refused by
    the server, so the log and the metrics keep the 200 the client got."""
    pytest.importorskip("prometheus_client")
    from collections.abc import Sequence

    from agentrun_asgi import ProtocolHandler, Request, Route

    class Half(ProtocolHandler):
        def routes(self) -> Sequence[Route]:
            return [Route("/half", self.half, ("GET",), "half.half")]

        async def half(self, request: Request, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ha", "more_body": True})
            raise RuntimeError("broke mid-body")

    server = AgentRunServer(lambda r: "x", protocols=[Half()], access_log=True, metrics=True,
                            metrics_public=True)  # fmt: skip
    with serve(server) as base:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(base + "/half/half")
        (record,) = access(access_records, 1)
        ok = sample("agentrun_requests_total", route="half.half", method="GET", status="200")
        samples = eventually(lambda: (s := scrape(base, key=None)).get(ok) and s)
    assert record.status == 200  # type: ignore[attr-defined]
    assert samples[ok] == 1
    assert not any(name == "agentrun_requests_total" and ("status", "500") in labels
                   for name, labels in samples)  # fmt: skip
