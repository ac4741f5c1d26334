"""API keys, CORS and request ids: in process for the rules, real uvicorn and clients for the wire.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import openai
import orjson
import pytest
from asgi_driver import Response, call

from agentrun_asgi import AgentRequest, AgentRunServer, OpenAIProtocolHandler, ProtocolHandler
from agentrun_asgi.middleware import current_request_id
from agentrun_asgi.protocols.agui import AGUIProtocolHandler
from agentrun_asgi.requests import Request
from agentrun_asgi.responses import JSON_HEADERS, send_bytes
from agentrun_asgi.routing import Route
from agentrun_asgi.types import Send

CHAT = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
AGUI = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
JSON = (b"content-type", b"application/json")
KEY = "sk-test-0123456789"
ORIGIN = "https://app.example.com"


def agent(request: AgentRequest) -> str:
    return "ok"


def run(app: Any, method: str, path: str, body: bytes = b"", /, **headers: str) -> Response:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return asyncio.run(call(app, method, path, body, [JSON, *raw]))


def assert_401(r: Response) -> dict[str, Any]:
    assert r.status == 401
    assert r.header("www-authenticate", ).startswith("Bearer")  # type: ignore[union-attr]
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] is None
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


# -- API keys ----------------------------------------------------------------------------------


@pytest.fixture
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTRUN_API_KEYS", raising=False)


def test_no_keys_no_check(no_env_keys: None) -> None:
    assert run(AgentRunServer(agent), "POST", "/v1/chat/completions", CHAT).status == 200


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic abc",
                                           "Bearer wrong", f"Bearer {KEY}x", f"Token {KEY}"])
def test_refused(no_env_keys: None, authorization: str | None) -> None:
    server = AgentRunServer(agent, api_keys=[KEY])
    headers = {} if authorization is None else {"authorization": authorization}
    for path in ("/v1/chat/completions", "/ag-ui/agent"):
        error = assert_401(run(server, "POST", path, CHAT, **headers))
        assert KEY not in error["message"]
    assert_401(run(server, "GET", "/v1/models", **headers))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_accepted(no_env_keys: None, scheme: str) -> None:
    server = AgentRunServer(agent, api_keys=["other", KEY])
    r = run(server, "POST", "/v1/chat/completions", CHAT, authorization=f"{scheme} {KEY}")
    assert r.status == 200


def test_every_key_is_compared(no_env_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit on the first match: the time taken says nothing about which key."""
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # taken when the server is built
    server = AgentRunServer(agent, api_keys=[KEY, "k2", "k3"])
    assert run(server, "POST", "/v1/chat/completions", CHAT,
               authorization=f"Bearer {KEY}").status == 200  # fmt: skip
    assert len(calls) == 3


def test_health_stays_open(no_env_keys: None) -> None:
    server = AgentRunServer(agent, api_keys=[KEY])
    for path in ("/health", "/health/"):
        assert run(server, "GET", path).status == 200
    assert run(server, "HEAD", "/health").status == 200


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_API_KEYS", f" {KEY} , second,, ")
    server = AgentRunServer(agent)
    assert server.api_keys == [KEY, "second"]
    assert_401(run(server, "POST", "/v1/chat/completions", CHAT))
    assert run(server, "POST", "/v1/chat/completions", CHAT,
               authorization="Bearer second").status == 200  # fmt: skip
    # An explicit empty list turns the check off, whatever the environment says.
    assert run(AgentRunServer(agent, api_keys=[]), "POST", "/v1/chat/completions",
               CHAT).status == 200  # fmt: skip


@pytest.mark.parametrize("value", ["", " , "])
def test_an_empty_key_variable_warns_that_the_api_is_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    """``AGENTRUN_API_KEYS`` set but blank (a secret left unfilled) means no check at all: the
    server says so instead of serving everyone in silence."""
    monkeypatch.setenv("AGENTRUN_API_KEYS", value)
    with caplog.at_level(logging.WARNING, logger="agentrun_asgi"):
        server = AgentRunServer(agent)
    assert run(server, "POST", "/v1/chat/completions", CHAT).status == 200
    (record,) = [r for r in caplog.records if "AGENTRUN_API_KEYS" in r.getMessage()]
    assert record.levelno == logging.WARNING and "open" in record.getMessage()
    caplog.clear()
    AgentRunServer(agent, api_keys=[])  # said explicitly: no warning
    monkeypatch.delenv("AGENTRUN_API_KEYS")
    AgentRunServer(agent)
    assert not [r for r in caplog.records if "AGENTRUN_API_KEYS" in r.getMessage()]


def test_a_key_with_surrounding_whitespace_still_matches(no_env_keys: None) -> None:
    """A key read from a file keeps its newline; the token never has one (it is stripped), so
    that key once refused every request with 401."""
    server = AgentRunServer(agent, api_keys=[f"{KEY}\n", " second "])
    for token in (KEY, "second"):
        assert run(server, "POST", "/v1/chat/completions", CHAT,
                   authorization=f"Bearer {token}").status == 200  # fmt: skip
    with pytest.raises(ValueError, match="non-empty key"):
        AgentRunServer(agent, api_keys=[KEY, " \n"])


@pytest.mark.parametrize("option", ["api_keys", "cors_origins", "cors_allow_headers"])
def test_a_single_string_is_refused(no_env_keys: None, option: str) -> None:
    """``api_keys="sk-..."`` is a ``Sequence[str]`` too: taken as is, each character of the key
    would be a key of its own, and ``Bearer s`` would get in."""
    with pytest.raises(TypeError, match=option) as info:
        AgentRunServer(agent, **{option: KEY})
    assert KEY not in str(info.value)
    from agentrun_asgi.middleware import APIKeyMiddleware

    with pytest.raises(TypeError):
        APIKeyMiddleware(AgentRunServer(agent), KEY)


def test_preflight_not_blocked_by_auth(no_env_keys: None) -> None:
    server = AgentRunServer(agent, api_keys=[KEY], cors_origins=[ORIGIN])
    r = run(server, "OPTIONS", "/v1/chat/completions", origin=ORIGIN,
            access_control_request_method="POST",
            access_control_request_headers="authorization, content-type")  # fmt: skip
    assert r.status == 204
    assert r.header("access-control-allow-origin") == ORIGIN
    # ...and the 401 itself is readable by the page (it carries CORS headers).
    refused = run(server, "POST", "/v1/chat/completions", CHAT, origin=ORIGIN)
    assert_401(refused)
    assert refused.header("access-control-allow-origin") == ORIGIN


def test_official_openai_client_with_api_key(serve: Any, no_env_keys: None) -> None:
    with serve(AgentRunServer(agent, api_keys=[KEY])) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
        completion = client.chat.completions.create(
            model="agentrun", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "ok"
        chunks = list(client.chat.completions.create(
            model="agentrun", messages=[{"role": "user", "content": "hi"}], stream=True
        ))  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"
        assert [m.id for m in client.models.list()] == ["agentrun"]

        wrong = openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.chat.completions.create(model="agentrun",
                                          messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert info.value.code == "invalid_api_key"


# -- CORS --------------------------------------------------------------------------------------


def preflight(server: Any, path: str = "/v1/chat/completions", origin: str = ORIGIN,
              headers: str | None = "content-type, x-stainless-os") -> Response:  # fmt: skip
    extra = {"origin": origin, "access_control_request_method": "POST"}
    if headers is not None:
        extra["access_control_request_headers"] = headers
    return run(server, "OPTIONS", path, **extra)


def test_preflight_answered() -> None:
    server = AgentRunServer(agent, cors_origins=[ORIGIN], cors_max_age=321)
    for path in ("/v1/chat/completions", "/ag-ui/agent", "/no/such/route"):
        r = preflight(server, path)
        assert r.status == 204 and r.body == b""
        assert r.header("access-control-allow-origin") == ORIGIN
        methods = {m.strip() for m in r.header("access-control-allow-methods").split(",")}  # type: ignore[union-attr]
        assert {"GET", "POST", "OPTIONS"} <= methods
        assert r.header("access-control-allow-headers") == "content-type, x-stainless-os"
        assert r.header("access-control-max-age") == "321"
        assert r.header("vary") == "Origin"
    assert preflight(server, headers=None).header("access-control-allow-headers") is None


def test_preflight_allow_headers_restricted() -> None:
    server = AgentRunServer(agent, cors_origins=[ORIGIN],
                            cors_allow_headers=["Content-Type", "Authorization"])  # fmt: skip
    r = preflight(server, headers="content-type, x-secret, authorization")
    assert r.header("access-control-allow-headers") == "content-type, authorization"


def test_preflight_grants_the_safelisted_header_names() -> None:
    """A JSON POST sends ``Content-Type: application/json``, which is not a safelisted value, so
    the browser asks for ``content-type`` in its preflight: ``cors_allow_headers=["Authorization"]``
    must not refuse it (nor Accept, Accept-Language, Content-Language), as Starlette grants them."""
    server = AgentRunServer(agent, cors_origins=[ORIGIN], cors_allow_headers=["Authorization"])
    r = preflight(server, headers="authorization, content-type, accept, x-secret")
    granted = {h.strip() for h in r.header("access-control-allow-headers").split(",")}  # type: ignore[union-attr]
    assert granted == {"authorization", "content-type", "accept"}


def test_preflight_from_other_origin_gets_no_cors_headers() -> None:
    server = AgentRunServer(agent, cors_origins=[ORIGIN])
    r = preflight(server, origin="https://evil.example.com")
    assert r.status == 403
    assert r.header("access-control-allow-origin") is None
    assert r.json()["error"]["code"] == "cors_origin_not_allowed"


def test_actual_response_marked_for_allowed_origin_only() -> None:
    server = AgentRunServer(agent, cors_origins=[ORIGIN + "/"])  # a trailing slash is forgiven
    r = run(server, "POST", "/v1/chat/completions", CHAT, origin=ORIGIN)
    assert r.status == 200
    assert r.header("access-control-allow-origin") == ORIGIN
    assert r.header("vary") == "Origin"
    assert r.header("access-control-expose-headers") == "x-request-id, x-should-retry"
    other = run(server, "POST", "/v1/chat/completions", CHAT, origin="https://evil.example.com")
    assert other.status == 200 and other.header("access-control-allow-origin") is None
    plain = run(server, "POST", "/v1/chat/completions", CHAT)
    assert plain.header("access-control-allow-origin") is None


def test_vary_origin_on_every_response() -> None:
    """The answer depends on ``Origin`` (Allow-Origin or not), so every response says so, with
    no Origin or another one too (Fetch standard, "CORS protocol and HTTP caches"; Starlette
    does the same): else a cache keeps a ``GET /v1/models`` fetched without CORS headers and
    serves it to the allowed page, which the browser then blocks."""
    for origins in ([ORIGIN], ["*"]):
        server = AgentRunServer(agent, cors_origins=origins)
        for headers in ({}, {"origin": "https://evil.example.com"}, {"origin": ORIGIN}):
            for method, path in (("GET", "/v1/models"), ("GET", "/nope")):
                r = run(server, method, path, **headers)
                assert [v for k, v in r.headers if k == b"vary"] == [b"Origin"], (origins, headers)


def test_an_origin_listed_in_mixed_case_matches_the_browsers_lower_case() -> None:
    server = AgentRunServer(agent, cors_origins=["https://App.Example.com/"])
    r = run(server, "GET", "/v1/models", origin="https://app.example.com")
    assert r.header("access-control-allow-origin") == "https://app.example.com"


def test_failed_run_tells_a_browser_client_not_to_retry() -> None:
    """The OpenAI JS client reads ``x-should-retry`` to skip its two retries of a 5xx; in a
    browser it sees only safelisted and exposed headers, so the header must be exposed."""

    def failing(request: AgentRequest) -> str:
        raise RuntimeError("boom")

    for request_id in (True, False):
        server = AgentRunServer(failing, cors_origins=[ORIGIN], request_id=request_id)
        r = run(server, "POST", "/v1/chat/completions", CHAT, origin=ORIGIN)
        assert r.status == 500 and r.header("x-should-retry") == "false"
        exposed = r.header("access-control-expose-headers") or ""
        assert "x-should-retry" in {h.strip() for h in exposed.split(",")}


def test_any_origin() -> None:
    server = AgentRunServer(agent, cors_origins=["*"])
    assert preflight(server, origin="https://x.test").header("access-control-allow-origin") == "*"
    r = run(server, "GET", "/v1/models", origin="https://y.test")
    assert r.header("access-control-allow-origin") == "*"


def test_cors_off_by_default() -> None:
    server = AgentRunServer(agent)
    r = preflight(server)
    assert r.status == 405  # OPTIONS is not a route; no CORS layer answers it
    assert r.header("access-control-allow-origin") is None
    assert run(server, "GET", "/v1/models", origin=ORIGIN).header(
        "access-control-allow-origin") is None  # fmt: skip


def test_streaming_response_carries_cors_over_real_uvicorn(serve: Any) -> None:
    with serve(AgentRunServer(agent, cors_origins=[ORIGIN])) as base:
        with httpx.stream("POST", base + "/v1/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                          headers={"Origin": ORIGIN}) as r:  # fmt: skip
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["access-control-allow-origin"] == ORIGIN
            assert b"[DONE]" in r.read()
        r2 = httpx.post(base + "/ag-ui/agent", content=AGUI, headers={"Origin": ORIGIN})
        assert r2.headers["access-control-allow-origin"] == ORIGIN


# -- request ids -------------------------------------------------------------------------------

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_request_id_generated() -> None:
    server = AgentRunServer(agent)
    ids = {run(server, "GET", "/health").header("x-request-id") for _ in range(3)}
    assert len(ids) == 3 and all(HEX32.fullmatch(i or "") for i in ids)


@pytest.mark.parametrize("incoming", ["abc-123", "A.b_c-9", "x" * 128])
def test_request_id_honoured(incoming: str) -> None:
    r = run(AgentRunServer(agent), "POST", "/v1/chat/completions", CHAT, x_request_id=incoming)
    assert r.header("x-request-id") == incoming


@pytest.mark.parametrize("incoming", ["", "x" * 129, "a b", "a\tb", "ab%s", "é", "a/b", "a;b"])
def test_request_id_replaced_when_invalid(incoming: str) -> None:
    raw = [JSON, (b"x-request-id", incoming.encode())]
    r = asyncio.run(call(AgentRunServer(agent), "GET", "/health", b"", raw))
    assert HEX32.fullmatch(r.header("x-request-id") or "")


def test_request_id_on_errors_and_off_switch() -> None:
    r = run(AgentRunServer(agent), "GET", "/nope", x_request_id="rid-404")
    assert r.status == 404 and r.header("x-request-id") == "rid-404"
    assert run(AgentRunServer(agent, request_id=False), "GET", "/health").header(
        "x-request-id") is None  # fmt: skip


class _RawProtocol(ProtocolHandler):
    """A custom protocol writing its heads straight to ``send``, and one through the helpers."""

    def get_prefix(self) -> str | None:
        return "/raw"

    def routes(self) -> list[Route]:
        return [Route("/direct", self.direct, ("GET",)), Route("/helper", self.helper, ("GET",))]

    async def direct(self, request: Request, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [JSON]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def helper(self, request: Request, send: Send) -> None:
        await send_bytes(send, 200, b"{}", JSON_HEADERS)


class _OverridingOpenAI(OpenAIProtocolHandler):
    """Overrides a built-in endpoint: once through ``super()``, once writing the head itself."""

    async def chat_completions(self, request: Request, send: Send) -> None:
        if request.headers.get("x-mode") == "direct":
            await send({"type": "http.response.start", "status": 200, "headers": [JSON]})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await super().chat_completions(request, send)


def _ids(r: Response) -> list[bytes]:
    return [v for k, v in r.headers if k == b"x-request-id"]


@pytest.mark.parametrize("layers", [{}, {"access_log": True}, {"middleware": [lambda app: app]}])
def test_request_id_once_on_every_route(layers: dict[str, Any]) -> None:
    """Built-in endpoints add the id themselves, others are given a ``send`` that adds it: with
    or without layers, every head carries it exactly once (errors and the playground too)."""
    protocols = [_OverridingOpenAI(), AGUIProtocolHandler(), _RawProtocol()]
    server = AgentRunServer(agent, protocols=protocols, **layers)
    cases = [
        ("GET", "/health", b"", {}), ("GET", "/v1/models", b"", {}),
        ("POST", "/v1/chat/completions", CHAT, {}),
        ("POST", "/v1/chat/completions", CHAT, {"x_mode": "direct"}),
        ("POST", "/v1/chat/completions", b"[", {}), ("POST", "/ag-ui/agent", AGUI, {}),
        ("GET", "/raw/direct", b"", {}), ("GET", "/raw/helper", b"", {}),
        ("GET", "/playground", b"", {}), ("GET", "/nope", b"", {}),
        ("DELETE", "/health", b"", {}),
    ]  # fmt: skip
    for method, path, body, headers in cases:
        r = run(server, method, path, body, x_request_id="rid-1", **headers)
        assert _ids(r) == [b"rid-1"], (method, path, headers, r.status, r.headers)
        r = run(server, method, path, body, **headers)
        assert len(_ids(r)) == 1 and HEX32.fullmatch(_ids(r)[0].decode()), (method, path)


def test_built_in_endpoints_get_the_servers_send() -> None:
    """The hot path: no ``send`` wrapper for endpoints that answer through the helpers."""
    server = AgentRunServer(agent, protocols=[OpenAIProtocolHandler(), _RawProtocol()])
    endpoint = server.router.match("/v1/chat/completions")[0]["POST"]  # type: ignore[index]
    assert getattr(endpoint, "__func__", None) is OpenAIProtocolHandler.chat_completions
    direct = server.router.match("/raw/direct")[0]["GET"]  # type: ignore[index]
    assert getattr(direct, "__func__", None) is not _RawProtocol.direct  # wrapped


def test_request_id_in_log_lines_and_in_agent(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str | None] = []

    def failing(request: AgentRequest) -> str:
        seen.append(current_request_id())  # a worker thread inherits the request's context
        raise RuntimeError("boom")

    server = AgentRunServer(failing)
    with caplog.at_level(logging.INFO, logger="agentrun_asgi"):
        r = run(server, "POST", "/v1/chat/completions", CHAT, x_request_id="trace-42")
    assert r.status == 500
    assert seen == ["trace-42"]
    lines = [rec for rec in caplog.records if rec.name == "agentrun_asgi"]
    assert lines and all(rec.getMessage().startswith("[trace-42] ") for rec in lines)
    assert all(getattr(rec, "request_id", None) == "trace-42" for rec in lines)
    assert current_request_id() is None  # reset after the request


def test_request_id_over_real_uvicorn(serve: Any) -> None:
    with serve(AgentRunServer(agent)) as base:
        r = httpx.get(base + "/v1/models", headers={"X-Request-ID": "edge-7"})
        assert r.headers["x-request-id"] == "edge-7"
        with httpx.stream("POST", base + "/v1/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "hi"}],
                                "stream": True}) as s:  # fmt: skip
            assert HEX32.fullmatch(s.headers["x-request-id"])
            s.read()


