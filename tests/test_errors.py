"""Bad input and the HTTP edges: each gets its status and an OpenAI-shaped error body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from agentrun_asgi import AgentRequest, AgentRunServer

USER = [{"role": "user", "content": "hi"}]
LIMIT = 1024
calls: list[AgentRequest] = []


def _agent(request: AgentRequest) -> str:
    calls.append(request)
    return "ok"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from conftest import run_server

    with run_server(AgentRunServer(_agent, max_body_size=LIMIT)) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert error["param"] == param
    return error  # type: ignore[no-any-return]


def chat(http: httpx.Client, body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json=body)


# -- the body ----------------------------------------------------------------------------------


def test_body_not_json(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b"{not json",
                  headers={"content-type": "application/json"})
    error = assert_error(r, 400)
    assert error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"]


def test_body_not_json_names_content_type(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b"a=1&b=2",
                  headers={"content-type": "application/x-www-form-urlencoded"})
    error = assert_error(r, 400)
    assert "application/x-www-form-urlencoded" in error["message"]


def test_empty_body(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b"")
    assert "empty" in assert_error(r, 400)["message"]


@pytest.mark.parametrize("body, kind", [(b"[]", "an array"), (b"3", "a number"),
                                        (b'"s"', "a string"), (b"null", "null")])
def test_body_not_an_object(http: httpx.Client, body: bytes, kind: str) -> None:
    r = http.post("/v1/chat/completions", content=body,
                  headers={"content-type": "application/json"})
    assert kind in assert_error(r, 400)["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_body_with_utf8_bom_accepted(http: httpx.Client, path: str) -> None:
    """RFC 8259 8.1: a parser may ignore a leading BOM, and json.loads (Starlette's and FastAPI's
    json(), so the AgentRun SDK's server) does; PowerShell and .NET writers add one."""
    body = b'{"messages":[{"role":"user","content":"hi"}],"input":"hi"}'
    bom = b"\xef\xbb\xbf"
    r = http.post(path, content=bom + body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert assert_error(http.post(path, content=bom * 2 + body), 400)["code"] == "invalid_json"
    assert "empty" in assert_error(http.post(path, content=bom), 400)["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_body_not_utf8_names_the_byte_and_the_charset(http: httpx.Client, path: str) -> None:
    """A Latin-1 body was told "str is not valid UTF-8: surrogates not allowed: line 1 column 1
    (char 0)" (orjson's words for any stray byte): not the problem, not its place."""
    body = '{"messages":[{"role":"user","content":"caf\u00e9"}],"input":"x"}'.encode("latin-1")
    at = body.index(b"\xe9")
    ctype = "application/json; charset=iso-8859-1"
    r = http.post(path, content=body, headers={"content-type": ctype})
    message = assert_error(r, 400)["message"]
    assert f"not UTF-8 (byte 0xe9 at offset {at})" in message and ctype in message
    assert "surrogates" not in message
    bom = http.post(path, content=b"\xef\xbb\xbf" + body)  # the offset is the client's own
    assert f"byte 0xe9 at offset {at + 3}" in assert_error(bom, 400)["message"]


@pytest.mark.parametrize("server", ["httptools", "h11"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_body_behind_an_upgrade_offer(serve: Any, server: str, path: str) -> None:
    """Java's RestClient and Ktor offer ``Upgrade: h2c`` on their POSTs. uvicorn's httptools
    parser then passes no body on (uvicorn issue 2722) and misreads what follows on the
    connection: the client was told its body was empty, which it was not, and got a second,
    plain-text 400 for its body read as a request. It is told why, and the connection closed."""
    from rawhttp import connect, read_to_close, read_until, request_head, split_response

    body = b'{"messages":[{"role":"user","content":"hi"}],"input":"hi"}'
    offer = {"Content-Type": "application/json", "Connection": "Upgrade, HTTP2-Settings",
             "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}  # fmt: skip
    with serve(AgentRunServer(_agent), http=server) as base:
        sock = connect(base)
        sock.sendall(request_head("POST", path, offer, len(body)) + body)
        if server == "h11":  # the offer ignored and the body read, as RFC 9110 7.8 allows
            assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200 ")
            sock.close()
            return
        status, headers, raw = split_response(read_to_close(sock))
        sock.close()
    assert status == 400 and headers["connection"] == "close"
    error = orjson.loads(raw)["error"]
    assert "'Upgrade: h2c'" in error["message"] and "--http h11" in error["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ag-ui/agent", "/v1/responses"])
def test_compressed_body_is_415(http: httpx.Client, path: str) -> None:
    """A gzip body (some HTTP clients compress requests) is not read as JSON: 415 says why
    (RFC 9110 15.5.16), where "not valid JSON: unexpected character" would not."""
    import gzip

    body = b'{"messages":[{"role":"user","content":"hi"}],"input":"hi"}'
    r = http.post(path, content=gzip.compress(body), headers={"content-encoding": "gzip"})
    error = assert_error(r, 415)
    assert error["code"] == "unsupported_content_encoding" and "gzip" in error["message"]
    assert r.headers["accept-encoding"] == "identity"
    plain = http.post(path, content=body, headers={"content-encoding": "identity"})
    assert plain.status_code == 200, plain.text


def test_form_content_type_with_json_body_accepted(http: httpx.Client) -> None:
    """Like ``curl -d '{...}'``, which sends application/x-www-form-urlencoded."""
    r = http.post("/v1/chat/completions", content=b'{"messages":[{"role":"user","content":"hi"}]}',
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "ok"


# -- fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({}, "messages", "required"),
        ({"messages": None}, "messages", "required"),
        ({"messages": "hi"}, "messages", "array"),
        ({"messages": {"role": "user"}}, "messages", "array"),
        ({"messages": []}, "messages", "at least one"),
        ({"messages": ["hi"]}, "messages[0]", "object"),
        ({"messages": [*USER, 3]}, "messages[1]", "object"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "must be one of"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "robot"),
        ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0].role", "must be one of"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role", "one of"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "a number"),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0].content",
         "an object"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]", "type"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]",
         "type"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
         "messages[0].content[0].text", "string"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text", "string"),
        ({"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls",
         "array"),
        ({"messages": [{"role": "assistant", "tool_calls": [1]}]},
         "messages[0].tool_calls[0]", "object"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 1}]},
         "messages[0].tool_call_id", "string"),
        ({"messages": [{"role": "user", "content": "x", "name": 1}]}, "messages[0].name",
         "string"),
        ({"messages": [{"role": "assistant", "function_call": "f"}]},
         "messages[0].function_call", "object"),
        ({"messages": USER, "stream": "true"}, "stream", "boolean"),
        ({"messages": USER, "stream": 1}, "stream", "boolean"),
        ({"messages": USER, "model": 5}, "model", "string"),
        ({"messages": USER, "model": ["gpt"]}, "model", "string"),
        ({"messages": USER, "temperature": "0.5"}, "temperature", "number"),
        ({"messages": USER, "temperature": True}, "temperature", "number"),
        ({"messages": USER, "top_p": "1"}, "top_p", "number"),
        ({"messages": USER, "max_tokens": 1.5}, "max_tokens", "integer"),
        ({"messages": USER, "max_tokens": True}, "max_tokens", "integer"),
        ({"messages": USER, "max_tokens": "10"}, "max_tokens", "integer"),
        ({"messages": USER, "max_completion_tokens": 2.5}, "max_completion_tokens", "integer"),
        ({"messages": USER, "n": "1"}, "n", "integer"),
        # One answer a run: n > 1 would promise choices the response never has.
        ({"messages": USER, "n": 2}, "n", "must be 1"),
        ({"messages": USER, "n": 0}, "n", "must be 1"),
        ({"messages": USER, "user": 3}, "user", "string"),
        ({"messages": USER, "tools": {}}, "tools", "array"),
        ({"messages": USER, "tools": "get_weather"}, "tools", "array"),
        ({"messages": USER, "tools": [1]}, "tools[0]", "object"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function.name",
         "required"),
        ({"messages": USER, "tools": [{"type": "function", "function": "f"}]},
         "tools[0].function", "object"),
        ({"messages": USER, "tools": [{"type": "function", "function": {"name": 3}}]},
         "tools[0].function.name", "string"),
        ({"messages": USER, "tools": [{"type": "function",
                                      "function": {"name": "f", "parameters": []}}]},
         "tools[0].function.parameters", "object"),
        ({"messages": USER, "tools": [{"type": "custom", "custom": {}}]},
         "tools[0].custom.name", "required"),
        # The flat shape ({name, ...}, accepted too): errors name the field where it was sent.
        ({"messages": USER, "tools": [{"name": 3}]}, "tools[0].name", "string"),
        ({"messages": USER, "tools": [{"name": "f", "parameters": []}]}, "tools[0].parameters",
         "object"),
        ({"messages": USER, "tools": [{"name": "f", "description": 1}]}, "tools[0].description",
         "string"),
        ({"messages": USER, "tools": [{"name": "", "type": "function"}]},
         "tools[0].name", "required"),
        ({"messages": USER, "tool_choice": 1}, "tool_choice", "string or an object"),
        ({"messages": USER, "stop": 1}, "stop", "string"),
        ({"messages": USER, "stop": ["a", 1]}, "stop", "string"),
        ({"messages": USER, "stop": {"a": 1}}, "stop", "string"),
        ({"messages": USER, "stream_options": "yes"}, "stream_options", "object"),
        ({"messages": USER, "stream_options": {"include_usage": "yes"}},
         "stream_options.include_usage", "boolean"),
    ],
)
def test_invalid_fields(http: httpx.Client, body: dict[str, Any], param: str, words: str) -> None:
    before = len(calls)
    error = assert_error(chat(http, body), 400, param)
    assert words in error["message"]
    assert len(calls) == before, "the agent must not run on invalid input"


@pytest.mark.parametrize(
    "body",
    [
        {"messages": USER, "model": None, "stream": None, "temperature": None, "stop": None},
        {"messages": USER, "stop": "x", "max_tokens": 5, "temperature": 1, "n": 1},
        {"messages": USER, "stop": ["x", "y"], "tool_choice": {"type": "function",
                                                               "function": {"name": "f"}}},
        {"messages": [{"role": "developer", "content": "d"}, {"role": "function", "name": "f",
                                                              "content": "r"}, *USER]},
        {"messages": USER, "tools": [{"name": "flat_tool"}]},
        {"messages": USER, "unknown_field": [1, 2], "metadata": {"a": "b"}},
    ],
)
def test_valid_variants_accepted(http: httpx.Client, body: dict[str, Any]) -> None:
    r = chat(http, body)
    assert r.status_code == 200, r.text


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# orjson reads up to 1024 levels of nesting but writes only 254: a value the server writes back
# (into an error message, or as a tool call's arguments text) must be refused as the client's
# mistake, not fail as a 500.
@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", '{"messages":[{"role":%s,"content":"x"}]}', "messages[0].role"),
        ("/v1/chat/completions", '{"messages":[{"role":"assistant","tool_calls":[{"id":"c",'
         '"function":{"name":"f","arguments":%s}}]}]}',
         "messages[0].tool_calls[0].function.arguments"),
        ("/v1/chat/completions", '{"messages":[{"role":"assistant","tool_calls":[{"id":"c",'
         '"type":"custom","custom":{"name":"f","input":%s}}]}]}',
         "messages[0].tool_calls[0].custom.input"),
        ("/v1/chat/completions", '{"messages":[{"role":"assistant","function_call":'
         '{"name":"f","arguments":%s}}]}', "messages[0].function_call.arguments"),
        ("/ag-ui/agent", '{"messages":[{"role":%s,"content":"x"}]}', "messages[0].role"),
        ("/ag-ui/agent", '{"messages":[{"role":"assistant","toolCalls":[{"id":"c",'
         '"function":{"name":"f","arguments":%s}}]}]}',
         "messages[0].toolCalls[0].function.arguments"),
        ("/v1/responses", '{"input":[{"role":%s,"content":"x"}]}', "input[0].role"),
    ],
)
def test_deeply_nested_values_are_400(http: httpx.Client, path: str, body: str, param: str
                                      ) -> None:  # fmt: skip
    before = len(calls)
    error = assert_error(http.post(path, content=(body % _nested(300)).encode()), 400, param)
    assert ("an array" if param.endswith("role") else "too deeply") in error["message"]
    assert len(calls) == before
    # Just within what orjson writes: accepted, or refused as any other wrong value.
    r = http.post(path, content=(body % _nested(254)).encode())
    assert r.status_code in (200, 400), r.text
    assert "too deeply" not in r.text


# -- routing edges -----------------------------------------------------------------------------


def test_unknown_path_404(http: httpx.Client) -> None:
    for path in ("/nope", "/v1", "/v1/chat", "/v1/chat/completions/extra", "/"):
        error = assert_error(http.get(path), 404)
        assert error["code"] == "not_found"
        assert path in error["message"]


def test_wrong_method_405_with_allow(http: httpx.Client) -> None:
    r = http.get("/v1/chat/completions")
    error = assert_error(r, 405)
    assert error["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
    r = http.post("/v1/models", json={})
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, HEAD"
    r = http.delete("/health")
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, HEAD"


def test_trailing_slash_tolerated(http: httpx.Client) -> None:
    assert http.get("/v1/models/").status_code == 200
    assert http.get("/health/").json() == {"status": "ok"}
    assert chat(http, {"messages": USER}).status_code == 200
    r = http.post("/v1/chat/completions/", json={"messages": USER})
    assert r.status_code == 200


def test_head_on_get_routes(http: httpx.Client) -> None:
    for path in ("/health", "/v1/models"):
        get = http.get(path)
        head = http.head(path)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == "application/json"
        assert head.headers["content-length"] == get.headers["content-length"]
    assert http.head("/v1/chat/completions").status_code == 405


# -- body size -------------------------------------------------------------------------------


def _big_body() -> bytes:
    filler = "x" * (LIMIT * 2)
    return b'{"messages":[{"role":"user","content":"' + filler.encode() + b'"}]}'


def test_body_over_limit_with_content_length(http: httpx.Client) -> None:
    before = len(calls)
    r = http.post("/v1/chat/completions", content=_big_body(),
                  headers={"content-type": "application/json"})
    error = assert_error(r, 413)
    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"]
    assert len(calls) == before


def test_body_over_limit_chunked(http: httpx.Client) -> None:
    body = _big_body()

    def pieces() -> Iterator[bytes]:
        # Paced, so that the server gets the body in several ASGI messages.
        for i in range(0, len(body), 256):
            yield body[i:i + 256]
            time.sleep(0.005)

    before = len(calls)
    r = http.post("/v1/chat/completions", content=pieces(),
                  headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert_error(r, 413)
    assert len(calls) == before


def test_body_under_limit_chunked_accepted(http: httpx.Client) -> None:
    body = b'{"messages":[{"role":"user","content":"' + b"y" * 600 + b'"}]}'

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i:i + 100]

    r = http.post("/v1/chat/completions", content=pieces(),
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert calls[-1].messages[0].text == "y" * 600


def test_invalid_content_length(base_url: str) -> None:
    """A raw request whose Content-Length is not a number never reaches the agent."""
    import socket

    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: abc\r\n\r\n{}")
        reply = sock.recv(4096)
    assert reply.split(b" ")[1] in (b"400", b"413")


# -- ASGI scopes other than http ---------------------------------------------------------------


def test_websocket_closed_cleanly() -> None:
    server = AgentRunServer(_agent)
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/chat/completions", "headers": [],
             "query_string": b"", "root_path": ""}
    asyncio.run(server(scope, receive, send))
    assert len(sent) == 1
    assert sent[0]["type"] == "websocket.close"
    assert inbox == []


def test_websocket_refused_by_real_server(base_url: str) -> None:
    websockets = pytest.importorskip("websockets.sync.client")
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        websockets.connect(base_url.replace("http", "ws") + "/v1/chat/completions",
                           open_timeout=5)
    assert info.value.response.status_code == 403
    # ...and HTTP keeps working.
    assert httpx.get(base_url + "/health").status_code == 200


def _lifespan(server: AgentRunServer, messages: list[str]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": m} for m in messages]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(server({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return sent


def test_lifespan_runs_sync_and_async_hooks() -> None:
    log: list[str] = []

    async def async_start() -> None:
        await asyncio.sleep(0)
        log.append("async start")

    async def async_stop() -> None:
        log.append("async stop")

    server = AgentRunServer(
        _agent,
        on_startup=[lambda: log.append("sync start"), async_start],
        on_shutdown=[lambda: log.append("sync stop"), async_stop],
    )
    sent = _lifespan(server, ["lifespan.startup", "lifespan.shutdown"])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert log == ["sync start", "async start", "sync stop", "async stop"]


def test_lifespan_startup_failure_reported() -> None:
    def broken() -> None:
        raise RuntimeError("database unreachable")

    sent = _lifespan(AgentRunServer(_agent, on_startup=[broken]), ["lifespan.startup"])
    assert sent == [{"type": "lifespan.startup.failed", "message": "database unreachable"}]


def test_lifespan_async_shutdown_failure_reported() -> None:
    async def broken() -> None:
        raise RuntimeError("flush failed")

    sent = _lifespan(AgentRunServer(_agent, on_shutdown=[broken]),
                     ["lifespan.startup", "lifespan.shutdown"])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.failed"]
    assert sent[1]["message"] == "flush failed"


def test_hooks_run_under_real_uvicorn() -> None:
    from conftest import run_server

    log: list[str] = []

    async def stop() -> None:
        log.append("stop")

    server = AgentRunServer(_agent, on_startup=[lambda: log.append("start")], on_shutdown=[stop])
    with run_server(server, lifespan="on") as url:
        assert log == ["start"]
        assert httpx.get(url + "/health").status_code == 200
    assert log == ["start", "stop"]


# -- the parser only ever refuses with a ProtocolError (never a 500) --------------------------


def test_parser_fuzz_only_protocol_errors() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from agentrun_asgi.errors import ProtocolError
    from agentrun_asgi.protocols.openai import parse_chat_request

    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=4), st.sampled_from(["user", "tool", "text", "function"]))
    names = st.sampled_from(["role", "content", "type", "text", "function", "name", "arguments",
                             "tool_calls", "id", "parameters", "include_usage", "tool_call_id"])
    value = st.recursive(
        leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(names, c, max_size=4)),
        max_leaves=10,
    )
    fields = st.sampled_from(["model", "messages", "stream", "stream_options", "tools",
                              "tool_choice", "temperature", "top_p", "max_tokens",
                              "max_completion_tokens", "stop", "n", "user"])

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(fields, value, max_size=5), st.lists(value, min_size=1, max_size=3))
    def check(body: dict[str, Any], messages: list[Any]) -> None:
        body.setdefault("messages", messages)
        try:
            parse_chat_request(body)
        except ProtocolError as error:
            assert error.status == 400

    check()


def test_unexpected_endpoint_exception_is_json_500(serve: Any) -> None:
    """A bug in an endpoint (here a custom protocol's) still answers in the error shape."""
    from collections.abc import Sequence

    from agentrun_asgi import ProtocolHandler, Request, Route
    from agentrun_asgi.types import Send

    class BuggyProtocolHandler(ProtocolHandler):
        def routes(self) -> Sequence[Route]:
            return [Route("/boom", self.boom, ("GET",))]

        async def boom(self, request: Request, send: Send) -> None:
            raise RuntimeError("endpoint bug")

    with serve(AgentRunServer(_agent, protocols=[BuggyProtocolHandler()])) as base:
        r = httpx.get(base + "/buggy/boom")
        assert httpx.get(base + "/health").status_code == 200
    error = assert_error(r, 500)
    assert "Traceback" not in r.text
    assert error["message"]


# -- Request.body() on its own: the limit while reading ASGI messages -------------------------


def _fake_receive(messages: list[dict[str, Any]]) -> tuple[Any, list[int]]:
    taken = [0]

    async def receive() -> dict[str, Any]:
        taken[0] += 1
        return messages.pop(0)

    return receive, taken


def _chunks(sizes: list[int]) -> list[dict[str, Any]]:
    return [{"type": "http.request", "body": b"x" * n, "more_body": i < len(sizes) - 1}
            for i, n in enumerate(sizes)]


def _read(request: Any) -> Any:
    return asyncio.run(request.body())


def test_request_body_joins_chunks_under_limit() -> None:
    from agentrun_asgi import Request

    receive, taken = _fake_receive(_chunks([10, 20, 0, 5]))
    request = Request({"type": "http", "headers": []}, receive, max_body_size=35)
    assert _read(request) == b"x" * 35
    assert taken[0] == 4
    assert _read(request) == b"x" * 35 and taken[0] == 4  # cached, not read twice


def test_request_body_stops_reading_at_limit() -> None:
    from agentrun_asgi import Request
    from agentrun_asgi.errors import ProtocolError

    receive, taken = _fake_receive(_chunks([10, 10, 10, 10, 10]))
    request = Request({"type": "http", "headers": []}, receive, max_body_size=25)
    with pytest.raises(ProtocolError) as info:
        _read(request)
    assert info.value.status == 413
    assert taken[0] == 3, "reading must stop at the chunk that crosses the limit"


def test_request_body_single_message_over_limit() -> None:
    from agentrun_asgi import Request
    from agentrun_asgi.errors import ProtocolError

    receive, _ = _fake_receive(_chunks([26]))
    with pytest.raises(ProtocolError, match="too large"):
        _read(Request({"type": "http", "headers": []}, receive, max_body_size=25))


def test_request_body_content_length_checked_before_reading() -> None:
    from agentrun_asgi import Request
    from agentrun_asgi.errors import ProtocolError

    receive, taken = _fake_receive(_chunks([1]))
    scope = {"type": "http", "headers": [(b"content-length", b"100")]}
    with pytest.raises(ProtocolError) as info:
        _read(Request(scope, receive, max_body_size=99))
    assert info.value.status == 413 and taken[0] == 0
    bad = {"type": "http", "headers": [(b"content-length", b"ten")]}
    with pytest.raises(ProtocolError) as info:
        _read(Request(bad, receive, max_body_size=99))
    assert info.value.status == 400


def test_request_body_disconnect() -> None:
    from agentrun_asgi import Request
    from agentrun_asgi.errors import ClientDisconnect

    for messages in ([{"type": "http.disconnect"}],
                     [*_chunks([5, 5])[:1], {"type": "http.disconnect"}]):
        receive, _ = _fake_receive(messages)
        with pytest.raises(ClientDisconnect):
            _read(Request({"type": "http", "headers": []}, receive))
