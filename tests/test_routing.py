"""The prefix-tree router, the path relative to a mount, and where protocols get their prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import openai
import pytest

from agentrun_asgi import AgentRunServer, OpenAIProtocolHandler, ProtocolHandler, Request, Route
from agentrun_asgi.requests import route_path
from agentrun_asgi.routing import RouteConflict, Router, join_path
from agentrun_asgi.types import Send


def endpoint(tag: str) -> Any:
    async def ep(request: Request, send: Send) -> None:  # pragma: no cover - never awaited here
        raise AssertionError(tag)

    ep.__name__ = tag
    return ep


A, B, C, D = (endpoint(t) for t in "abcd")


def match(router: Router, path: str) -> tuple[dict[str, Any], bytes, dict[str, str] | None]:
    found = router.match(path)
    assert found is not None, path
    return found


# -- matching ----------------------------------------------------------------------------------


def test_literal_paths_and_misses() -> None:
    router = Router([Route("/v1/chat/completions", A), Route("/v1/models", B, ("GET",))])
    endpoints, allow, params = match(router, "/v1/chat/completions")
    assert endpoints == {"POST": A}
    assert allow == b"POST"
    assert params is None
    endpoints, allow, _ = match(router, "/v1/models")
    assert endpoints == {"GET": B, "HEAD": B}
    assert allow == b"GET, HEAD"
    for miss in ("/", "/v1", "/v1/chat", "/v1/chat/completions/x", "/v2/models", "/V1/models"):
        assert router.match(miss) is None, miss


def test_param_segments() -> None:
    router = Router([Route("/threads/{thread_id}/runs/{run_id}", A, ("GET",))])
    _, _, params = match(router, "/threads/t-1/runs/r%202")
    assert params == {"thread_id": "t-1", "run_id": "r%202"}
    assert router.match("/threads/t-1/runs") is None
    assert router.match("/threads/t-1/runs/r/extra") is None


def test_literal_beats_param() -> None:
    router = Router([Route("/items/{id}", A, ("GET",)), Route("/items/special", B, ("GET",))])
    endpoints, _, params = match(router, "/items/special")
    assert endpoints["GET"] is B and params is None
    endpoints, _, params = match(router, "/items/other")
    assert endpoints["GET"] is A and params == {"id": "other"}


def test_param_tried_when_literal_leads_nowhere() -> None:
    router = Router([Route("/a/{x}/c", A, ("GET",)), Route("/a/b", B, ("GET",))])
    assert match(router, "/a/b")[0]["GET"] is B
    endpoints, _, params = match(router, "/a/z/c")
    assert endpoints["GET"] is A and params == {"x": "z"}
    # The literal "b" is a dead end for /a/b/c: the parameter branch must still match.
    endpoints, _, params = match(router, "/a/b/c")
    assert endpoints["GET"] is A and params == {"x": "b"}
    assert router.match("/a/b/d") is None
    # A literal node that exists but has no endpoint of its own falls back too.
    router = Router([Route("/p/{id}", A, ("GET",)), Route("/p/lit/deeper", B, ("GET",))])
    endpoints, _, params = match(router, "/p/lit")
    assert endpoints["GET"] is A and params == {"id": "lit"}
    assert match(router, "/p/lit/deeper")[0]["GET"] is B


def test_rest_of_path_param() -> None:
    router = Router([Route("/models/{model:path}", A, ("GET",)), Route("/models", B, ("GET",))])
    assert match(router, "/models/org/agent") == ({"GET": A, "HEAD": A}, b"GET, HEAD",
                                                  {"model": "org/agent"})  # fmt: skip
    assert match(router, "/models/agentrun/")[2] == {"model": "agentrun"}
    assert match(router, "/models")[0]["GET"] is B  # one segment or more: never empty
    assert router.match("/model/x") is None


def test_rest_of_path_comes_after_literal_and_param() -> None:
    router = Router([
        Route("/f/{id}", A, ("GET",)), Route("/f/{rest:path}", B, ("GET",)),
        Route("/f/lit/x", C, ("GET",)), Route("/f/{id}/meta", D, ("GET",)),
    ])  # fmt: skip
    assert match(router, "/f/lit/x")[0]["GET"] is C
    assert match(router, "/f/1") == ({"GET": A, "HEAD": A}, b"GET, HEAD", {"id": "1"})
    assert match(router, "/f/1/meta")[2] == {"id": "1"}
    # Dead ends on the literal and on the parameter branch: the rest-of-path route takes it.
    assert match(router, "/f/lit/y")[2] == {"rest": "lit/y"}
    assert match(router, "/f/1/2/3") == ({"GET": B, "HEAD": B}, b"GET, HEAD", {"rest": "1/2/3"})


def test_rest_of_path_must_be_last_and_named_alike() -> None:
    with pytest.raises(ValueError, match="last segment"):
        Router([Route("/a/{rest:path}/b", A, ("GET",))])
    with pytest.raises(RouteConflict, match="clashes"):
        Router([Route("/a/{x:path}", A, ("GET",)), Route("/a/{y:path}", B, ("POST",))])


def test_same_path_several_methods_merge() -> None:
    router = Router([Route("/r", A, ("GET",)), Route("/r", B, ("POST", "delete"))])
    endpoints, allow, _ = match(router, "/r")
    assert endpoints == {"GET": A, "HEAD": A, "POST": B, "DELETE": B}
    assert allow == b"GET, HEAD, POST, DELETE"


def test_explicit_head_overrides_auto_head() -> None:
    router = Router([Route("/r", A, ("GET",)), Route("/r", B, ("HEAD",))])
    assert match(router, "/r")[0]["HEAD"] is B
    router = Router([Route("/r", B, ("HEAD",)), Route("/r", A, ("GET",))])
    assert match(router, "/r")[0]["HEAD"] is B


@pytest.mark.parametrize("path", ["/v1/models/", "//v1//models", "v1/models", "/v1/models//"])
def test_trailing_and_double_slashes(path: str) -> None:
    router = Router([Route("/v1/models", A, ("GET",))])
    assert match(router, path)[0]["GET"] is A


def test_root_route() -> None:
    router = Router([Route("/", A, ("GET",))])
    assert match(router, "/")[0]["GET"] is A
    assert match(router, "")[0]["GET"] is A
    assert router.match("/x") is None


# -- conflicts ---------------------------------------------------------------------------------


def test_same_method_same_path_conflicts() -> None:
    with pytest.raises(RouteConflict, match="POST /v1/x"):
        Router([Route("/v1/x", A), Route("/v1/x/", B)])


def test_different_param_names_conflict() -> None:
    with pytest.raises(RouteConflict, match="clashes"):
        Router([Route("/t/{a}", A, ("GET",)), Route("/t/{b}/x", B, ("GET",))])


def test_same_param_name_different_methods_ok() -> None:
    router = Router([Route("/t/{a}", A, ("GET",)), Route("/t/{a}", B, ("POST",))])
    assert match(router, "/t/1")[0] == {"GET": A, "HEAD": A, "POST": B}


def test_explicit_head_twice_conflicts() -> None:
    with pytest.raises(RouteConflict):
        Router([Route("/r", A, ("HEAD",)), Route("/r", B, ("HEAD",))])


class EchoProtocolHandler(ProtocolHandler):
    """A minimal custom protocol: GET {prefix}/echo/{word}."""

    name = "echo"

    def __init__(self, path: str = "/echo/{word}") -> None:
        self.path = path

    def routes(self) -> Sequence[Route]:
        return [Route(self.path, self.echo, ("GET",), "echo")]

    async def echo(self, request: Request, send: Send) -> None:
        from agentrun_asgi.responses import send_json

        await send_json(send, 200, {"path_params": request.scope.get("path_params"),
                                    "path": request.path})


class ChatProtocolHandler(ProtocolHandler):
    """Claims ``/chat/completions`` under whatever prefix it is given."""

    def routes(self) -> Sequence[Route]:
        return [Route("/chat/completions", self.ep)]

    async def ep(self, request: Request, send: Send) -> None:  # pragma: no cover
        pass


def test_colliding_protocols_refused_at_construction() -> None:
    with pytest.raises(RouteConflict, match="/v1/chat/completions"):
        AgentRunServer(lambda r: "x", protocols=[OpenAIProtocolHandler(), ChatProtocolHandler()],
                       prefix_overrides={"ChatProtocolHandler": "/v1"})


def test_protocol_colliding_with_health_refused() -> None:
    class Health(ProtocolHandler):
        def get_prefix(self) -> str:
            return "/"

        def routes(self) -> Sequence[Route]:
            return [Route("/health", A, ("GET",))]

    with pytest.raises(RouteConflict, match="/health"):
        AgentRunServer(lambda r: "x", protocols=[Health()])
    # Moving health away removes the clash.
    AgentRunServer(lambda r: "x", protocols=[Health()], health_path=None)


# -- root_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "root_path, path, expected",
    [
        ("/agent", "/agent/v1/models", "/v1/models"),
        ("/agent", "/agent", "/"),
        ("/agent", "/agent/", "/"),
        ("/agent", "/agents/v1", "/agents/v1"),  # a prefix of a segment is not a mount
        ("", "/v1/models", "/v1/models"),
        ("/agent", "/v1/models", "/v1/models"),  # servers that do not prepend root_path
    ],
)
def test_route_path(root_path: str, path: str, expected: str) -> None:
    assert route_path({"root_path": root_path, "path": path}) == expected


def _asgi_get(app: Any, path: str, root_path: str = "") -> tuple[int, bytes, dict[str, Any]]:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "root_path": root_path,
                             "headers": [], "query_string": b"", "raw_path": path.encode()}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), scope


def test_server_routes_relative_to_root_path() -> None:
    server = AgentRunServer(lambda r: "x")
    status, body, _ = _asgi_get(server, "/agent/v1/models", root_path="/agent")
    assert status == 200 and b'"agentrun"' in body
    assert _asgi_get(server, "/agent/v1/models")[0] == 404


def test_path_params_reach_scope() -> None:
    server = AgentRunServer(lambda r: "x", protocols=[EchoProtocolHandler()])
    status, body, scope = _asgi_get(server, "/echo/echo/hello")
    assert status == 200
    assert scope["path_params"] == {"word": "hello"}
    assert b'"path_params":{"word":"hello"}' in body


# -- prefixes ----------------------------------------------------------------------------------


def _paths(server: AgentRunServer) -> set[str]:
    # The playground page (on by default) has its own tests: tests/test_playground.py.
    return {route.path for route in server.routes if not route.name.startswith("playground.")}


def test_default_prefixes() -> None:
    server = AgentRunServer(lambda r: "x")
    assert _paths(server) == {
        "/health", "/v1/chat/completions", "/v1/models", "/v1/models/{model:path}",
        "/v1/responses", "/ag-ui/agent",
    }
    only_openai = AgentRunServer(lambda r: "x", protocols=[OpenAIProtocolHandler()])
    assert _paths(only_openai) == {
        "/health", "/v1/chat/completions", "/v1/models", "/v1/models/{model:path}",
    }


def test_derived_prefix_from_class_name() -> None:
    server = AgentRunServer(lambda r: "x", protocols=[EchoProtocolHandler()])
    assert _paths(server) == {"/health", "/echo/echo/{word}"}
    assert EchoProtocolHandler().default_prefix() == "/echo"

    class MyFancyThing(ChatProtocolHandler):
        pass

    assert MyFancyThing().default_prefix() == "/myfancything"


def test_handler_get_prefix() -> None:
    class Prefixed(EchoProtocolHandler):
        def get_prefix(self) -> str:
            return "/tools/v2/"

    server = AgentRunServer(lambda r: "x", protocols=[Prefixed()])
    assert "/tools/v2/echo/{word}" in _paths(server)


def test_override_beats_get_prefix() -> None:
    server = AgentRunServer(
        lambda r: "x", protocols=[OpenAIProtocolHandler(), EchoProtocolHandler()],
        prefix_overrides={"OpenAIProtocolHandler": "/api/v1", "EchoProtocolHandler": "/"},
    )
    assert _paths(server) == {"/health", "/api/v1/chat/completions", "/api/v1/models",
                              "/api/v1/models/{model:path}", "/echo/{word}"}


def test_prefix_override_served(serve: Any) -> None:
    server = AgentRunServer(lambda r: "moved",
                            prefix_overrides={"OpenAIProtocolHandler": "/api/v1"})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with serve(server) as base:
        r = httpx.post(base + "/api/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "moved"
        assert httpx.get(base + "/api/v1/models").status_code == 200
        old = httpx.post(base + "/v1/chat/completions", json=body)
        assert old.status_code == 404
        assert old.json()["error"]["code"] == "not_found"
        # One base_url for the official client: the Responses API moved with Chat Completions.
        oai = openai.OpenAI(base_url=base + "/api/v1", api_key="k", max_retries=0)
        assert oai.responses.create(model="m", input="hi").output_text == "moved"
        assert httpx.post(base + "/v1/responses", json={"input": "hi"}).status_code == 404


def test_responses_api_follows_the_chat_prefix_unless_given_its_own() -> None:
    from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler as Responses

    def paths(**overrides: str) -> set[str]:
        server = AgentRunServer(lambda r: "x", playground=False, health_path=None,
                                prefix_overrides=overrides)  # fmt: skip
        return {p for p in _paths(server) if p.endswith(("/responses", "/chat/completions"))}

    assert paths() == {"/v1/chat/completions", "/v1/responses"}
    assert paths(OpenAIProtocolHandler="/api/v1") == {
        "/api/v1/chat/completions", "/api/v1/responses"}
    assert paths(OpenAIProtocolHandler="/a", OpenAIResponsesProtocolHandler="/b") == {
        "/a/chat/completions", "/b/responses"}
    alone = AgentRunServer(lambda r: "x", protocols=[Responses()], playground=False)
    assert "/v1/responses" in _paths(alone)


@pytest.mark.parametrize("prefix, path, expected", [
    ("/v1", "/models", "/v1/models"),
    ("/v1/", "models", "/v1/models"),
    ("", "/x", "/x"),
    ("/", "/", "/"),
    ("/a//b/", "//c", "/a/b/c"),
])  # fmt: skip
def test_join_path(prefix: str, path: str, expected: str) -> None:
    assert join_path(prefix, path) == expected


def test_prefix_override_of_no_handler_refused() -> None:
    """A misspelt key (or the handler's ``name`` instead of its class name) would leave the
    protocol at its default prefix without a word."""
    for key in ("OpenAIHandler", "openai", "AGUIProtocolHandler"):
        with pytest.raises(ValueError, match=f"{key}.*OpenAIProtocolHandler"):
            AgentRunServer(lambda r: "x", protocols=[OpenAIProtocolHandler()],
                           prefix_overrides={key: "/api/v1"})
    with pytest.raises(TypeError, match="path string"):
        AgentRunServer(lambda r: "x", prefix_overrides={"OpenAIProtocolHandler": None})  # type: ignore[dict-item]
    # The playground is a handler too.
    server = AgentRunServer(lambda r: "x", prefix_overrides={"PlaygroundHandler": "/chat"})
    assert "/chat" in {route.path for route in server.routes}


@pytest.mark.parametrize("path", [
    "/items/{id:int}", "/items/{id:str}", "/files/{name}.json", "/files/v{n}", "/x/{}",
    "/x/{a-b}", "/x/{a}}", "/x/}",
])  # fmt: skip
def test_misread_path_templates_refused(path: str) -> None:
    """Templates written for Starlette must not be taken silently as something else: a
    converter as part of the parameter's name, a partial-segment parameter as a literal."""
    with pytest.raises(ValueError, match="parameter"):
        Router([Route(path, A, ("GET",))])


def test_methods_as_a_bare_string_refused() -> None:
    """``methods="GET"`` would register the methods G, E and T, and 405 every GET."""
    with pytest.raises(TypeError, match=r"\('GET',\)"):
        Router([Route("/r", A, "GET")])


def test_request_path_params_as_in_starlette(serve: Any) -> None:
    """``request.path_params``, the name Starlette's ``Request`` gives them (README: the
    ``Request`` has Starlette's attribute names); empty on a route without parameters."""
    from agentrun_asgi.responses import send_json

    class Params(ProtocolHandler):
        def routes(self) -> Sequence[Route]:
            return [Route("/t/{thread_id}/{rest:path}", self.ep, ("GET",)),
                    Route("/plain", self.ep, ("GET",))]

        async def ep(self, request: Request, send: Send) -> None:
            await send_json(send, 200, request.path_params)

    with serve(AgentRunServer(lambda r: "x", protocols=[Params()])) as base:
        with_params = httpx.get(base + "/params/t/t1/a/b")
        plain = httpx.get(base + "/params/plain")
    assert with_params.json() == {"thread_id": "t1", "rest": "a/b"}
    assert plain.status_code == 200 and plain.json() == {}


def test_a_route_of_another_method_does_not_hide_one_that_takes_it(serve: Any) -> None:
    """``POST /items/special`` beside ``GET /items/{id}``: a GET of ``/items/special`` is the
    parameter route's (as in Starlette, where the literal route is only a partial match), and
    a method neither takes is still a 405 naming the literal route's methods."""
    from agentrun_asgi.responses import send_json

    class Items(ProtocolHandler):
        def routes(self) -> Sequence[Route]:
            return [Route("/special", self.special, ("POST",)),
                    Route("/{id}", self.item, ("GET",)),
                    Route("/{id}/{rest:path}", self.item, ("DELETE",)),
                    Route("/{id}/tags", self.special, ("PUT",))]  # fmt: skip

        async def special(self, request: Request, send: Send) -> None:
            await send_json(send, 200, {"route": "special", **request.path_params})

        async def item(self, request: Request, send: Send) -> None:
            await send_json(send, 200, {"route": "item", **request.path_params})

    with serve(AgentRunServer(lambda r: "x", protocols=[Items()])) as base:
        posted = httpx.post(base + "/items/special")
        got = httpx.get(base + "/items/special")
        other = httpx.get(base + "/items/42")
        tags = httpx.put(base + "/items/7/tags")
        tail = httpx.delete(base + "/items/7/tags")  # the rest-of-path route, not PUT's literal
        refused = httpx.delete(base + "/items/special")
    assert posted.json() == {"route": "special"}
    assert got.json() == {"route": "item", "id": "special"}
    assert other.json() == {"route": "item", "id": "42"}
    assert tags.json() == {"route": "special", "id": "7"}
    assert tail.json() == {"route": "item", "id": "7", "rest": "tags"}
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
