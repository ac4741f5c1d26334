"""A user-written protocol next to OpenAI, and every shipped example driven by a real uvicorn."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
USER = [{"role": "user", "content": "hi"}]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10)


def sse_data(text: str) -> list[Any]:
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    return [json.loads(f[len("data: "):]) if f != "data: [DONE]" else "[DONE]" for f in frames]


# -- examples/custom_protocol.py ---------------------------------------------------------------


@pytest.fixture(scope="module")
def custom() -> ModuleType:
    return load_example("custom_protocol")


def test_custom_routes_next_to_openai(custom: ModuleType) -> None:
    paths = {route.path for route in custom.server.routes}
    assert {"/custom/invoke", "/custom/stream", "/v1/chat/completions", "/v1/models"} <= paths


def test_custom_json_route(serve: Any, custom: ModuleType) -> None:
    with serve(custom.server) as base:
        r = httpx.post(base + "/custom/invoke", json={"input": "hello there"})
        bad = httpx.post(base + "/custom/invoke", json={"input": 5})
        not_json = httpx.post(base + "/custom/invoke", content=b"{oops")
        wrong_method = httpx.get(base + "/custom/invoke")
    assert r.status_code == 200
    assert r.json() == {"output": "Echo (custom): hello there ", "events": 4}
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "input"
    assert not_json.status_code == 400
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


def test_request_json_of_a_bad_body_is_400(serve: Any) -> None:
    """README's custom protocol reads ``await request.json()`` unguarded: a body that is not
    JSON is the client's mistake (400 ``invalid_json``), not an endpoint failure (500); code
    that catches ``json.JSONDecodeError`` itself still catches it."""
    from agentrun_asgi import AgentRunServer, ProtocolHandler, Request, Route
    from agentrun_asgi.responses import send_json

    class Plain(ProtocolHandler):
        def get_prefix(self) -> str:
            return "/plain"

        def routes(self) -> list[Route]:
            return [Route("/bare", self.bare), Route("/guarded", self.guarded)]

        async def bare(self, request: Request, send: Any) -> None:
            await send_json(send, 200, await request.json())

        async def guarded(self, request: Request, send: Any) -> None:
            try:
                body = await request.json()
            except json.JSONDecodeError as exc:
                body = {"caught": exc.pos}
            await send_json(send, 200, body)

    with serve(AgentRunServer(lambda r: "ok", protocols=[Plain()])) as base:
        ok = httpx.post(base + "/plain/bare", json={"a": 1})
        bad = [httpx.post(base + "/plain/bare", content=body) for body in (b"{oops", b"", b"\xff")]
        guarded = httpx.post(base + "/plain/guarded", content=b"{oops")
        bom = httpx.post(base + "/plain/bare", content=b'\xef\xbb\xbf{"a":1}')
        gzipped = httpx.post(base + "/plain/bare", content=b"\x1f\x8b\x08\x00",
                             headers={"content-encoding": "gzip"})
    assert ok.status_code == 200 and ok.json() == {"a": 1}
    assert bom.status_code == 200 and bom.json() == {"a": 1}  # as json.loads (Starlette) reads it
    for r in bad:
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/json" and r.headers["x-request-id"]
        error = r.json()["error"]
        assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
        assert error["message"].startswith("The request body is not valid JSON")
    assert "not UTF-8 (byte 0xff at offset 0)" in bad[2].json()["error"]["message"]
    assert guarded.status_code == 200 and guarded.json() == {"caught": 1}
    assert gzipped.status_code == 415
    assert gzipped.json()["error"]["code"] == "unsupported_content_encoding"


def readme_block(marker: str) -> str:
    """The README's fenced Python block that contains ``marker``."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, marker
    return found[0]


def test_readme_custom_protocol_snippet(serve: Any) -> None:
    """The README's protocol, copied as is: a body without a string 'prompt' is the client's
    mistake (400 naming the field), not a KeyError behind a 500."""
    namespace: dict[str, Any] = {"invoke_agent": lambda request: "Hi " + request.messages[0].text}
    exec(readme_block("class CustomProtocolHandler"), namespace)
    with serve(namespace["server"]) as base:
        ok = httpx.post(base + "/custom/invoke", json={"prompt": "there"})
        bad = [httpx.post(base + "/custom/invoke", json=body)
               for body in ({}, [1], {"prompt": 5})]  # fmt: skip
    assert ok.status_code == 200 and ok.json() == {"answer": "Hi there"}
    for r in bad:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "prompt"


def test_custom_sse_route(serve: Any, custom: ModuleType) -> None:
    with serve(custom.server) as base:
        with httpx.stream("POST", base + "/custom/stream", json={"input": "yo"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            body = r.read().decode()
    events = sse_data(body)
    assert events[-1] == {"done": True}
    assert "".join(e["text"] for e in events[:-1]) == "Echo (custom): yo "


def test_custom_sse_route_agent_error(serve: Any, custom: ModuleType) -> None:
    def broken(request: Any) -> str:
        raise ValueError("custom failure")

    from agentrun_asgi import AgentRunServer

    server = AgentRunServer(broken, protocols=[custom.CustomProtocolHandler()])
    with serve(server) as base:
        r = httpx.post(base + "/custom/stream", json={"input": "x"})
        still_up = httpx.post(base + "/custom/invoke", json={"input": "x"})
    assert sse_data(r.text) == [{"error": "custom failure"}]
    assert still_up.status_code == 500
    assert still_up.json()["error"]["message"] == "custom failure"


def test_same_agent_over_openai(serve: Any, custom: ModuleType) -> None:
    with serve(custom.server) as base:
        completion = oai(base + "/v1").chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Echo (openai): hi "


# -- the other examples -------------------------------------------------------------------------


def test_minimal_example(serve: Any) -> None:
    minimal = load_example("minimal")
    with serve(minimal.server) as base:
        client = oai(base + "/v1")
        whole = client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
        )
    assert whole.choices[0].message.content == "You said: hi"
    assert streamed == "You said: hi"


def test_streaming_example(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    streaming = load_example("streaming")
    monkeypatch.setattr(streaming, "DELAY", 0)
    with serve(streaming.server) as base:
        client = oai(base + "/v1")
        chunks = list(client.chat.completions.create(
            model="m", messages=USER, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        ))
        with client.chat.completions.stream(model="m", messages=USER) as stream:  # type: ignore[arg-type]
            final = stream.get_final_completion()
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert "".join(d.content or "" for d in deltas) == "It is sunny in Paris today. "
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 21
    message = final.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_prefix_overrides_example(serve: Any) -> None:
    module = load_example("prefix_overrides")
    with serve(module.server) as base:
        completion = oai(base + "/api/v1").chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        old = httpx.post(base + "/v1/chat/completions", json={"messages": USER})
    assert completion.choices[0].message.content == "Served from /api/v1."
    assert old.status_code == 404


def test_fastapi_mount_example(serve: Any) -> None:
    module = load_example("fastapi_mount")
    hooks: list[str] = []
    module.server.on_startup.append(lambda: hooks.append("startup"))
    module.server.on_shutdown.append(lambda: hooks.append("shutdown"))
    with serve(module.app, lifespan="on") as base:
        client = openai.OpenAI(base_url=base + "/agent/v1", api_key="x", max_retries=0,
                               timeout=10, default_headers={"x-tenant": "acme"})
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
        )
        status = httpx.get(base + "/status").json()
    assert text == "Hello from the mounted agent, acme."
    assert status["agent"] == "/agent/v1"
    # Mounted, the server gets no lifespan events of its own: the host's lifespan runs them.
    assert hooks == ["startup", "shutdown"]


def test_examples_start_only_under_main() -> None:
    """Importing an example must not start a server (tests and ASGI servers import them)."""
    for name in ("minimal", "streaming", "custom_protocol", "prefix_overrides", "fastapi_mount"):
        source = (EXAMPLES / f"{name}.py").read_text()
        assert 'if __name__ == "__main__":' in source, name
        head = source.split('if __name__ == "__main__":')[0]
        assert ".start(" not in head and "uvicorn.run(" not in head, name
    assert "server.start(port=9000)" in (EXAMPLES / "minimal.py").read_text()


def test_one_handler_instance_in_two_servers(serve: Any, custom: ModuleType) -> None:
    """Binding the same instance to a second server must not make the first run the second's
    agent: each server serves its own agent through the handler it was given."""
    from agentrun_asgi import AgentRunServer

    shared = custom.CustomProtocolHandler()
    first = AgentRunServer(lambda r: "first agent", protocols=[shared])
    second = AgentRunServer(lambda r: "second agent", protocols=[shared])
    with serve(first) as base_1, serve(second) as base_2:
        one = httpx.post(base_1 + "/custom/invoke", json={"input": "x"})
        two = httpx.post(base_2 + "/custom/invoke", json={"input": "x"})
    assert one.json()["output"] == "first agent"
    assert two.json()["output"] == "second agent"
    assert first.protocols[0] is shared and isinstance(second.protocols[0], type(shared))


def test_ndjson_stream_through_run_stream(serve: Any) -> None:
    """A protocol of one's own streaming NDJSON through ``run_stream`` sends its own
    content-type, not SSE's with it (two values make clients misread the stream)."""
    import orjson

    from agentrun_asgi import (
        AgentEvent,
        AgentRequest,
        AgentRunServer,
        Message,
        MessageRole,
        ProtocolHandler,
        Request,
        Route,
    )
    from agentrun_asgi.invoker import event_text
    from agentrun_asgi.streaming import run_stream

    class NDJSONEncoder:
        done = False

        def encode(self, item: str | AgentEvent) -> bytes:
            return orjson.dumps({"text": event_text(item)}) + b"\n"

        def error(self, message: str, code: str | None = None) -> bytes:
            self.done = True
            return orjson.dumps({"error": message, "code": code}) + b"\n"

        def close(self) -> bytes:
            self.done = True
            return b'{"done":true}\n'

    class LinesProtocolHandler(ProtocolHandler):
        def routes(self) -> list[Route]:
            return [Route("/stream", self.stream)]

        async def stream(self, request: Request, send: Any) -> None:
            agent_request = AgentRequest(protocol="lines", stream=True, raw_request=request,
                                         messages=[Message(MessageRole.USER, "hi")])
            await run_stream(request, send, self.invoke(agent_request), NDJSONEncoder(),
                             headers=[(b"content-type", b"application/x-ndjson")])

    def agent(request: Any) -> Any:
        yield "a"
        yield "b"

    with serve(AgentRunServer(agent, protocols=[LinesProtocolHandler()])) as base:
        r = httpx.post(base + "/lines/stream", json={})
    assert r.headers.get_list("content-type") == ["application/x-ndjson"]
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-request-id"]
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines == [{"text": "a"}, {"text": "b"}, {"done": True}]


def test_an_endpoints_own_request_id_header_is_sent_once(serve: Any) -> None:
    """An ``x-request-id`` a protocol passes to the response helpers (say, an upstream's id it
    relays) replaces the request's own; two values read as one joined by a comma."""
    from agentrun_asgi import AgentRunServer, ProtocolHandler, Request, Route
    from agentrun_asgi.responses import JSON_HEADERS, send_bytes, start_event_stream

    relayed = [(b"X-Request-ID", b"upstream-7")]

    class RelayProtocolHandler(ProtocolHandler):
        def routes(self) -> list[Route]:
            return [Route("/whole", self.whole), Route("/stream", self.stream)]

        async def whole(self, request: Request, send: Any) -> None:
            await send_bytes(send, 200, b"{}", JSON_HEADERS, relayed)

        async def stream(self, request: Request, send: Any) -> None:
            await start_event_stream(send, relayed)
            await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    with serve(AgentRunServer(lambda request: "", protocols=[RelayProtocolHandler()])) as base:
        whole = httpx.post(base + "/relay/whole", headers={"x-request-id": "mine"})
        stream = httpx.post(base + "/relay/stream", headers={"x-request-id": "mine"})
        plain = httpx.post(base + "/relay/whole")
    assert whole.status_code == 200 and whole.headers.get_list("x-request-id") == ["upstream-7"]
    assert stream.headers.get_list("x-request-id") == ["upstream-7"]
    assert stream.text == "data: 1\n\n"
    assert plain.status_code == 200 and plain.headers.get_list("x-request-id") == ["upstream-7"]
