"""The FastAPI shim under a real uvicorn: mounted, behind root_path, and the request view."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType

USER = [{"role": "user", "content": "hi"}]


async def _agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    yield AgentEvent(EventType.REASONING, {"delta": "r"})
    yield "mounted "
    yield "answer"


def test_mounted_under_fastapi_with_openai_client(serve: Any) -> None:
    started: list[str] = []
    server = AgentRunServer(_agent, on_startup=[lambda: started.append("up")])
    app = FastAPI()

    @app.get("/own")
    def own() -> dict[str, str]:
        return {"app": "host"}

    sub = server.as_fastapi_app()
    app.mount("/agent", sub)
    with serve(app) as base:
        oai = openai.OpenAI(base_url=base + "/agent/v1", api_key="x", max_retries=0, timeout=10)
        whole = oai.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        chunks = list(oai.chat.completions.create(
            model="m", messages=USER, stream=True  # type: ignore[arg-type]
        ))
        models = [m.id for m in oai.models.list()]
        health = httpx.get(base + "/agent/health")
        own_route = httpx.get(base + "/own")
        missing = httpx.get(base + "/agent/v2/models")
        unmounted = httpx.get(base + "/v1/models")
    assert whole.choices[0].message.content == "mounted answer"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "mounted answer"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert models == ["agentrun"]
    assert health.json() == {"status": "ok"}
    assert own_route.json() == {"app": "host"}
    # Misses under the mount are answered by the server itself, in the OpenAI error shape.
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert unmounted.status_code == 404


def test_openapi_version_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI's own default version is "0.1.0": ``/openapi.json`` must give the package's,
    whatever it is; a caller's ``version=`` wins."""
    monkeypatch.setattr("agentrun_asgi.fastapi.__version__", "9.8.7")
    server = AgentRunServer(lambda request: "x")
    assert server.as_fastapi_app().openapi()["info"]["version"] == "9.8.7"
    assert server.as_fastapi_app(version="2").openapi()["info"]["version"] == "2"


def test_as_fastapi_app_without_fastapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI is an extra: a wheel installed without it said only "No module named
    'fastapi'"; the error now gives the install command, as ``metrics=True`` does."""
    monkeypatch.delitem(sys.modules, "agentrun_asgi.fastapi", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install 'agentrun-asgi\[fastapi\]'"):
        AgentRunServer(lambda request: "ok").as_fastapi_app()


def test_as_fastapi_app_runs_lifespan_hooks(serve: Any) -> None:
    log: list[str] = []
    server = AgentRunServer(_agent, on_startup=[lambda: log.append("start")],
                            on_shutdown=[lambda: log.append("stop")])
    with serve(server.as_fastapi_app(), lifespan="on") as base:
        assert log == ["start"]
        r = httpx.post(base + "/v1/chat/completions", json={"messages": USER, "stream": True})
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.text.endswith("data: [DONE]\n\n")
    assert log == ["start", "stop"]


def test_as_fastapi_app_keeps_the_servers_lifespan_beside_the_callers(serve: Any) -> None:
    """``as_fastapi_app(lifespan=...)`` is FastAPI's own keyword: it used to replace the server's
    startup and shutdown (hooks, lifespan, grace) instead of running inside them."""
    log: list[str] = []
    server = AgentRunServer(_agent, on_startup=[lambda: log.append("start")],
                            on_shutdown=[lambda: log.append("stop")])  # fmt: skip

    @asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        log.append("mine in")
        yield {"pool": "ready"}
        log.append("mine out")

    with serve(server.as_fastapi_app(lifespan=mine), lifespan="on") as base:
        assert log == ["start", "mine in"]
        assert httpx.get(base + "/health").json() == {"status": "ok"}
    assert log == ["start", "mine in", "mine out", "stop"]


def test_as_fastapi_app_runs_fastapis_own_startup_and_shutdown_handlers(serve: Any) -> None:
    """FastAPI skips ``on_startup`` / ``on_shutdown`` handlers when given a ``lifespan``, and the
    shim always gives one: ``as_fastapi_app(on_startup=[...])`` used to be dropped silently."""
    log: list[str] = []

    async def warm() -> None:
        log.append("fastapi up")

    server = AgentRunServer(_agent, on_startup=[lambda: log.append("server up")],
                            on_shutdown=[lambda: log.append("server down")])  # fmt: skip
    app = server.as_fastapi_app(on_startup=[warm], on_shutdown=[lambda: log.append("fastapi down")])
    with serve(app, lifespan="on") as base:
        assert log == ["server up", "fastapi up"]
        assert httpx.get(base + "/health").json() == {"status": "ok"}
    assert log == ["server up", "fastapi up", "fastapi down", "server down"]


def test_as_fastapi_app_passes_the_servers_lifespan_state_to_requests(serve: Any) -> None:
    """The mapping the server's ``lifespan`` yields reaches ``scope["state"]`` under the shim as
    it does on the bare server: it used to be dropped, so an agent reading it failed (500)."""

    @asynccontextmanager
    async def pool(server: AgentRunServer) -> AsyncIterator[dict[str, str]]:
        yield {"pool": "db"}

    @asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        yield {"cache": "warm"}

    def agent(request: AgentRequest) -> str:
        raw = request.raw_request
        assert raw is not None
        state = raw.scope["state"]
        return ",".join(f"{k}={state[k]}" for k in sorted(state))

    server = AgentRunServer(agent, lifespan=pool)
    answers = []
    for app in (server, server.as_fastapi_app(), server.as_fastapi_app(lifespan=mine)):
        with serve(app, lifespan="on") as base:
            oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
            reply = oai.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
            answers.append(reply.choices[0].message.content)
    assert answers == ["pool=db", "pool=db", "cache=warm,pool=db"]


def test_uvicorn_root_path(serve: Any) -> None:
    """Behind a proxy that strips ``/prefix``: uvicorn's root_path, both bare and via FastAPI."""
    seen: list[tuple[str, str]] = []

    def agent(request: AgentRequest) -> str:
        raw = request.raw_request
        assert raw is not None
        seen.append((raw.path, raw.scope.get("root_path", "")))
        return "behind proxy"

    body = {"messages": USER}
    server = AgentRunServer(agent)
    for app in (server, server.as_fastapi_app()):
        with serve(app, root_path="/prefix") as base:
            r = httpx.post(base + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "behind proxy"
            assert httpx.get(base + "/v1/models").status_code == 200
            oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
            stream = oai.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
            assert "".join(c.choices[0].delta.content or "" for c in stream) == "behind proxy"
    assert seen[0] == ("/prefix/v1/chat/completions", "/prefix")


def test_request_view_inside_agent(serve: Any) -> None:
    seen: dict[str, Any] = {}

    async def agent(request: AgentRequest) -> str:
        raw = request.raw_request
        assert raw is not None
        seen["method"] = raw.method
        seen["url.path"] = raw.url.path
        seen["url.query"] = raw.url.query
        seen["url"] = str(raw.url)
        seen["x-custom"] = raw.headers["X-Custom-Header"]
        seen["x-custom lower"] = raw.headers.get("x-custom-header")
        seen["multi"] = raw.headers.getlist("x-multi")
        seen["missing header"] = raw.headers.get("x-absent")
        seen["in headers"] = "CONTENT-TYPE" in raw.headers and "content-type" in raw.headers
        seen["query"] = dict(raw.query_params)
        seen["query list"] = raw.query_params.getlist("tag")
        seen["client"] = (raw.client.host, type(raw.client.port)) if raw.client else None
        seen["body"] = await raw.body()
        seen["json"] = await raw.json()
        seen["path"] = raw.path
        seen["scope type"] = raw.scope["type"]
        return "ok"

    app = FastAPI()
    app.mount("/agent", AgentRunServer(agent).as_fastapi_app())
    payload = {"messages": USER, "extra": "é"}
    with serve(app) as base:
        r = httpx.post(
            base + "/agent/v1/chat/completions?tag=a&tag=b&q=1",
            content=json.dumps(payload).encode(),
            headers=[("content-type", "application/json"), ("X-Custom-Header", "v1"),
                     ("x-multi", "1"), ("x-multi", "2")],
        )
    assert r.status_code == 200, r.text
    host_port = base.removeprefix("http://")
    assert seen == {
        "method": "POST",
        "url.path": "/agent/v1/chat/completions",
        "url.query": "tag=a&tag=b&q=1",
        "url": f"http://{host_port}/agent/v1/chat/completions?tag=a&tag=b&q=1",
        "x-custom": "v1",
        "x-custom lower": "v1",
        "multi": ["1", "2"],
        "missing header": None,
        "in headers": True,
        "query": {"tag": "b", "q": "1"},
        "query list": ["a", "b"],
        "client": ("127.0.0.1", int),
        "body": json.dumps(payload).encode(),
        "json": payload,
        "path": "/agent/v1/chat/completions",
        "scope type": "http",
    }
