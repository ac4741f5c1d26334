"""The server inside other frameworks under a real uvicorn: Starlette ``Mount`` and FastAPI
``app.mount``, streaming included, and the FastAPI app's OpenAPI document listing its routes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import parse_sse, verify

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentRunServer,
    AGUIProtocolHandler,
    EventType,
    OpenAIProtocolHandler,
)
from agentrun_asgi.fastapi import install_openapi
from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

USER: Any = [{"role": "user", "content": "hi"}]
RUN = {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user", "content": "hi"}]}


async def agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    yield AgentEvent(EventType.REASONING, {"delta": "hm"})
    for word in ("embedded ", "and ", "streaming"):
        yield word


def full_server(**options: Any) -> AgentRunServer:
    protocols = [OpenAIProtocolHandler(), AGUIProtocolHandler(), OpenAIResponsesProtocolHandler()]
    return AgentRunServer(agent, protocols=protocols, **options)


def check_mounted(base: str) -> None:
    """Every protocol through the mount at ``base``: JSON, SSE chunks, AG-UI, Responses."""
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
    assert oai.chat.completions.create(model="m", messages=USER).choices[0].message.content == (
        "embedded and streaming")
    chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
    assert [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content] == [
        "embedded ", "and ", "streaming"]  # one chunk per yield: streamed, not buffered
    with httpx.stream("POST", base + "/ag-ui/agent", json=RUN, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    events = verify(parse_sse(body))
    assert [e["type"] for e in events][0::len(events) - 1] == ["RUN_STARTED", "RUN_FINISHED"]
    assert oai.responses.create(model="m", input="hi").output_text == "embedded and streaming"
    assert httpx.get(base + "/health").json() == {"status": "ok"}


def test_starlette_mount(serve: Any) -> None:
    log: list[str] = []
    server = full_server(on_startup=[lambda: log.append("up")],
                         on_shutdown=[lambda: log.append("down")])  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host")

    app = Starlette(routes=[Route("/", home), Mount("/agent", app=server)], lifespan=lifespan)
    with serve(app, lifespan="on") as base:
        check_mounted(base + "/agent")
        assert httpx.get(base + "/").text == "host"
        missing = httpx.post(base + "/agent/v1/nothing", json={})
        assert log == ["up"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert log == ["up", "down"]


def test_a_mount_whose_host_never_starts_the_server_is_told_once(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Mounted with no call to ``server.startup()`` from the host's lifespan, the server's
    hooks never run: said once in the log, when requests arrive (not per request), and not
    at all when the host starts it or the server has no hooks to miss."""
    ran: list[str] = []
    missed = full_server(on_startup=[lambda: ran.append("up")])
    hookless = full_server()
    started = full_server(on_startup=[lambda: ran.append("up")])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await started.startup()
        yield
        await started.shutdown()

    app = Starlette(routes=[Mount("/missed", app=missed), Mount("/hookless", app=hookless),
                            Mount("/started", app=started)], lifespan=lifespan)  # fmt: skip
    caplog.set_level(logging.WARNING, logger="agentrun_asgi")
    with serve(app, lifespan="on") as base:
        for _ in range(3):
            for mount in ("missed", "hookless", "started"):
                r = httpx.post(f"{base}/{mount}/v1/chat/completions", json={"messages": USER})
                assert r.status_code == 200
            time.sleep(0.05)  # the sweep disarms between them: armed again on the next
    told = [r for r in caplog.records if "startup never ran" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]
    assert ran == ["up"]  # only the started one's hook


def test_a_mount_with_only_shutdown_hooks_is_told_too(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A server with on_shutdown hooks alone, mounted with no startup from the host, will never
    run them either: told, as one with startup hooks is (the README promises it of hooks)."""
    missed = full_server(on_shutdown=[lambda: None])
    app = Starlette(routes=[Mount("/missed", app=missed)])
    caplog.set_level(logging.WARNING, logger="agentrun_asgi")
    with serve(app, lifespan="on") as base:
        r = httpx.post(f"{base}/missed/v1/chat/completions", json={"messages": USER})
        assert r.status_code == 200
    told = [r for r in caplog.records if "startup never ran" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]


def test_fastapi_mount_of_the_bare_server(serve: Any) -> None:
    server = full_server()
    app = FastAPI()

    @app.get("/own")
    def own() -> dict[str, str]:
        return {"app": "host"}

    app.mount("/agent", server)
    install_openapi(app, server, "/agent")
    with serve(app) as base:
        check_mounted(base + "/agent")
        assert httpx.get(base + "/own").json() == {"app": "host"}
        schema = httpx.get(base + "/openapi.json").json()
    # The host's own document lists its route and the mounted server's, under the mount.
    assert "/own" in schema["paths"]
    assert schema["paths"]["/agent/v1/chat/completions"]["post"]["summary"] == (
        "Create a chat completion")
    assert "/agent/v1/responses" in schema["paths"] and "/agent/ag-ui/agent" in schema["paths"]


def test_as_fastapi_app_streams_and_documents_routes(serve: Any) -> None:
    server = full_server()
    host = FastAPI()
    # A fresh server: the first one is shut down when its uvicorn stops (lifespan), and a
    # mounted sub-app gets no lifespan events of its own to start it again.
    host.mount("/agent", full_server().as_fastapi_app(title="my agent"))
    with serve(server.as_fastapi_app()) as base:
        check_mounted(base)
        schema = httpx.get(base + "/openapi.json").json()
        docs = httpx.get(base + "/docs")
    with serve(host) as base:
        check_mounted(base + "/agent")
        mounted_schema = httpx.get(base + "/agent/openapi.json").json()
    paths = schema["paths"]
    by_name = {r.name: r for r in server.routes}
    # Every server route is documented with its methods (GET implies HEAD: not listed).
    for route in server.routes:
        methods = {m.lower() for m in route.methods if m != "HEAD"}
        assert methods <= set(paths[route.path.replace(":path}", "}")]), route
    chat = paths[by_name["openai.chat_completions"].path]["post"]
    assert chat["summary"] == "Create a chat completion"
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["messages"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert paths["/v1/models"]["get"]["summary"] == "List models"
    model = paths["/v1/models/{model}"]["get"]
    assert model["summary"] == "Retrieve a model"
    assert [(p["name"], p["in"]) for p in model["parameters"]] == [("model", "path")]
    assert paths["/ag-ui/agent"]["post"]["tags"] == ["AG-UI"]
    assert "text/event-stream" in paths["/ag-ui/agent"]["post"]["responses"]["200"]["content"]
    assert paths["/v1/responses"]["post"]["summary"] == "Create a model response"
    assert paths["/health"]["get"]["summary"] == "Health check"
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # Mounted: the sub-app's own document, served under the mount, says where it lives.
    assert mounted_schema["info"]["title"] == "my agent"
    assert mounted_schema["servers"] == [{"url": "/agent"}]
    assert "/v1/chat/completions" in mounted_schema["paths"]


def test_openapi_documents_the_playground_files_as_what_they_are() -> None:
    """They were listed as routes answering JSON (schemathesis: undocumented Content-Type)."""
    paths = full_server().as_fastapi_app().openapi()["paths"]
    expected = {"/playground": "text/html", "/playground/app.js": "text/javascript",
                "/playground/app.css": "text/css", "/playground/icon.svg": "image/svg+xml"}
    for path, content_type in expected.items():
        operation = paths[path]["get"]
        assert list(operation["responses"]["200"]["content"]) == [content_type], path
        assert operation["tags"] == ["playground"] and "requestBody" not in operation


def test_openapi_for_custom_routes() -> None:
    """A route of a custom protocol gets a generic entry and its path parameters."""
    from agentrun_asgi import ProtocolHandler
    from agentrun_asgi import Route as AgentRoute
    from agentrun_asgi.responses import send_json

    class ThingsProtocolHandler(ProtocolHandler):
        def routes(self) -> list[AgentRoute]:
            return [AgentRoute("/{thing_id}", self.get_thing, ("GET", "DELETE"), "things.one")]

        async def get_thing(self, request: Any, send: Any) -> None:
            await send_json(send, 200, {})

    app = AgentRunServer(agent, protocols=[ThingsProtocolHandler()]).as_fastapi_app()
    paths = app.openapi()["paths"]
    operations = paths["/things/{thing_id}"]
    assert set(operations) == {"get", "delete"}
    assert operations["get"]["parameters"] == [
        {"name": "thing_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    assert operations["get"]["operationId"] != operations["delete"]["operationId"]
    assert app.openapi() is app.openapi()  # built once


def test_path_params_of_the_mount_are_kept(serve: Any) -> None:
    """Mounted under a path with a parameter of its own, a custom route's parameters join the
    host's in ``scope["path_params"]`` instead of replacing them (as Starlette's routes do)."""
    from agentrun_asgi import ProtocolHandler
    from agentrun_asgi import Route as AgentRoute
    from agentrun_asgi.responses import send_json

    class ThingsProtocolHandler(ProtocolHandler):
        def routes(self) -> list[AgentRoute]:
            return [AgentRoute("/{thing_id}", self.get_thing, ("GET",), "things.one"),
                    AgentRoute("/all", self.get_thing, ("GET",), "things.all")]

        async def get_thing(self, request: Any, send: Any) -> None:
            await send_json(send, 200, request.scope.get("path_params"))

    server = AgentRunServer(agent, protocols=[ThingsProtocolHandler()])

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await server.startup()
        yield
        await server.shutdown()

    host = FastAPI(lifespan=lifespan)
    host.mount("/tenants/{tenant}/agent", server.as_fastapi_app())
    with serve(host, lifespan="on") as base:
        one = httpx.get(base + "/tenants/acme/agent/things/42")
        every = httpx.get(base + "/tenants/acme/agent/things/all")
    assert one.json() == {"tenant": "acme", "thing_id": "42"}
    assert every.json() == {"tenant": "acme"}
